package catalog_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/pkg/catalog"
)

// TestTextRoundTrip: a plain string stays a plain string on the wire, a map
// by language stays a map, and both come back as they went.
func TestTextRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		wire string
		text catalog.Text
	}{
		{`"Sales"`, catalog.Plain("Sales")},
		{`"销售额"`, catalog.Plain("销售额")},
		{`{"en":"Sales","zh":"销售额"}`, catalog.Text{"zh": "销售额", "en": "Sales"}},
		{`""`, nil},
	}
	for _, tt := range tests {
		var got catalog.Text
		if err := json.Unmarshal([]byte(tt.wire), &got); err != nil {
			t.Fatalf("%s: %v", tt.wire, err)
		}
		if len(got) != 0 || len(tt.text) != 0 {
			if !reflect.DeepEqual(got, tt.text) {
				t.Errorf("%s decoded as %#v, want %#v", tt.wire, got, tt.text)
			}
		}
		out, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != tt.wire {
			t.Errorf("%s encoded back as %s", tt.wire, out)
		}
	}
}

func TestTextIn(t *testing.T) {
	t.Parallel()
	both := catalog.Text{"zh": "销售额", "en": "Sales"}
	for _, tt := range []struct {
		t          catalog.Text
		lang, want string
	}{
		{both, "zh", "销售额"},
		{both, "zh-TW", "销售额"},
		{both, "en", "Sales"},
		{both, "de", "Sales"}, // English is the fallback
		{catalog.Text{"zh": "销售额", "ja": "売上"}, "de", "売上"},
		{catalog.Plain("Orders"), "zh", "Orders"},
		{nil, "zh", ""},
	} {
		if got := tt.t.In(tt.lang); got != tt.want {
			t.Errorf("%v.In(%q) = %q, want %q", tt.t, tt.lang, got, tt.want)
		}
	}
}

// TestEntryRoundTrip: an entry with every panel field survives JSON both
// ways, and an old plain entry keeps its exact bytes.
func TestEntryRoundTrip(t *testing.T) {
	t.Parallel()
	old := `{"room":"sales","title":"Sales","metrics":[{"key":"sales","label":"Sales","unit":"CNY"}],"interval_ms":2000}`
	e, err := catalog.Parse("sales", []byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := json.Marshal(e); string(out) != old {
		t.Errorf("plain entry re-encoded as\n%s\nwant\n%s", out, old)
	}

	full := `{"room":"sales","title":{"en":"Sales","zh":"销售"},"metrics":[
	 {"key":"revenue","label":{"en":"Revenue","zh":"销售额"},"unit":{"en":"CNY","zh":"元"},"panel":"number","format":"money","currency":"CNY","decimals":1,
	  "target":{"value":1000000,"label":{"zh":"目标"},"style":"gauge"},
	  "compare":[{"key":"revenue_lw","label":{"en":"vs last week","zh":"同比"}}],
	  "thresholds":[{"below":0.5,"color":"bad"},{"above":1,"color":"#22c55e"}],"size":{"w":2,"h":1}},
	 {"key":"channels","label":"Channels","panel":"share","names":{"app":{"en":"App","zh":"App"},"store":{"en":"Stores","zh":"门店"}}},
	 {"key":"top","label":"Top","panel":"ranking","top":5},
	 {"key":"orders","label":"Orders","panel":"list","top":8}],"interval_ms":1000}`
	e, err = catalog.Parse("sales", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	again, err := catalog.Parse("sales", out)
	if err != nil {
		t.Fatalf("re-parse %s: %v", out, err)
	}
	if !reflect.DeepEqual(e, again) {
		t.Errorf("round trip changed the entry:\n%+v\n%+v", e, again)
	}
	m := again.Metrics[0]
	if again.Title.In("zh") != "销售" || m.Unit.In("zh") != "元" || m.Target.Style != "gauge" || *m.Target.Value != 1e6 ||
		m.Compare[0].Label.In("zh") != "同比" || *m.Thresholds[0].Below != 0.5 || m.Size.W != 2 || *m.Decimals != 1 {
		t.Errorf("decoded %+v", m)
	}
	if again.Metrics[1].Names["store"].In("zh") != "门店" {
		t.Errorf("names %+v", again.Metrics[1].Names)
	}
}

func TestPanelValidation(t *testing.T) {
	t.Parallel()
	metric := func(fields string) string {
		return `{"title":"S","metrics":[{"key":"a",` + fields + `}]}`
	}
	tests := []struct{ name, data, err string }{
		{"every kind", `{"title":"S","metrics":[{"key":"a","panel":"number"},{"key":"b","panel":"line"},{"key":"c","panel":"total"},{"key":"d","panel":"ranking"},{"key":"e","panel":"share"},{"key":"f","panel":"list"}]}`, ""},
		{"unknown kind", metric(`"panel":"pie"`), "metrics[0].panel"},
		{"unknown format", metric(`"format":"roman"`), "metrics[0].format"},
		{"bad currency", metric(`"currency":"yuan"`), "currency"},
		{"decimals", metric(`"decimals":9`), "decimals"},
		{"target both", metric(`"target":{"value":1,"key":"t"}`), "target"},
		{"target neither", metric(`"target":{}`), "target"},
		{"target style", metric(`"target":{"value":1,"style":"pie"}`), "target.style"},
		{"compare without key", metric(`"compare":[{"label":"x"}]`), "compare[0].key"},
		{"threshold both", metric(`"thresholds":[{"above":1,"below":2,"color":"bad"}]`), "thresholds[0]"},
		{"threshold colour", metric(`"thresholds":[{"above":1,"color":"red;x:y"}]`), "color"},
		{"size", metric(`"size":{"w":13}`), "size"},
		{"top", metric(`"top":99`), "top"},
		{"label by language", metric(`"label":{"zh":"销售额","en":"Sales"}`), ""},
		{"bad language tag", metric(`"label":{"Chinese!":"销售额"}`), "language tag"},
		{"empty language tag", metric(`"label":{"":"x","zh":"y"}`), "JSON"},
		{"label of numbers", metric(`"label":{"zh":5}`), "JSON"},
		{"title by language", `{"title":{"zh":"销售"}}`, ""},
		{"empty title map", `{"title":{}}`, "title"},
		{"long label in one language", metric(`"label":{"zh":"` + strings.Repeat("长", catalog.MaxTextLen+1) + `"}`), "label.zh"},
	}
	for _, tt := range tests {
		_, err := catalog.Parse("s", []byte(tt.data))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want one mentioning %q", tt.name, err, tt.err)
		}
	}
}
