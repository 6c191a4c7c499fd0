package catalog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/catalog"
)

func TestParse(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("长", catalog.MaxTextLen+1)
	tests := []struct {
		name, room, data string
		err              string // substring; "" for valid
	}{
		{"full", "sales", `{"room":"sales","title":"Sales","metrics":[{"key":"sales","label":"Sales","unit":"CNY"}],"interval_ms":2000}`, ""},
		{"room from key", "sales", `{"title":"Sales","metrics":[]}`, ""},
		{"no metrics", "sales", `{"title":"Sales"}`, ""},
		{"chinese", "sales_cn", `{"title":"销售","metrics":[{"key":"s","label":"销售额","unit":"元"}]}`, ""},
		{"unknown fields ignored", "s", `{"title":"S","colour":"red"}`, ""},
		{"other room", "sales", `{"room":"visitors","title":"V"}`, "room"},
		{"bad key", "a.b", `{"title":"x"}`, "room"},
		{"no title", "sales", `{"metrics":[]}`, "title"},
		{"title too long", "sales", `{"title":"` + long + `"}`, "title"},
		{"metric without key", "sales", `{"title":"S","metrics":[{"label":"x"}]}`, "metrics[0].key"},
		{"duplicate key", "sales", `{"title":"S","metrics":[{"key":"a"},{"key":"a"}]}`, "duplicate"},
		{"negative interval", "sales", `{"title":"S","interval_ms":-1}`, "interval_ms"},
		{"not an object", "sales", `[1]`, "JSON"},
		{"wrong type", "sales", `{"title":5}`, "JSON"},
		{"too large", "sales", `{"title":"` + strings.Repeat("x", catalog.MaxEntryBytes) + `"}`, "limit"},
	}
	for _, tt := range tests {
		_, err := catalog.Parse(tt.room, []byte(tt.data))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want one mentioning %q", tt.name, err, tt.err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("sales", []byte(`{"title":"Sales","metrics":[{"key":"a","label":"销售额","unit":"元"}]}`))
	f.Add("x", []byte(`{"room":"y"}`))
	f.Add("e", []byte(`{"title":"x","metrics":[{"key":"a","label":{},"compare":[],"thresholds":[],"names":{},"size":{}}]}`))
	f.Add("s", []byte(`{"title":{"zh":"销售","en":"Sales"},"metrics":[{"key":"a","label":{"zh":"额"},"panel":"number","format":"money","target":{"value":1,"style":"gauge"},"compare":[{"key":"b"}],"thresholds":[{"above":1,"color":"good"}],"names":{"x":{"en":"X"}},"size":{"w":2}}]}`))
	f.Fuzz(func(t *testing.T, room string, data []byte) {
		e, err := catalog.Parse(room, data)
		if err != nil {
			return
		}
		if e.Room != room {
			t.Fatalf("entry for %q names %q", room, e.Room)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("parsed entry does not validate: %v", err)
		}
		// What a gateway serves parses back to the same entry.
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		again, err := catalog.Parse(room, out)
		if err != nil {
			t.Fatalf("re-parse %s: %v", out, err)
		}
		if !reflect.DeepEqual(e, again) {
			t.Fatalf("round trip changed %+v into %+v", e, again)
		}
	})
}

// TestStoreWithoutJetStream: with a NATS that has no JetStream the store
// learns entries from plain announcements.
func TestStoreWithoutJetStream(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATSWith(t, &server.Options{})
	nc := roomtest.Connect(t, ns)
	s := catalog.NewStore(catalog.DefaultBucket, 1, 0, roomtest.Logger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nc) }()
	roomtest.Eventually(t, 5*time.Second, func() error {
		if !s.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	actx, acancel := context.WithTimeout(ctx, 5*time.Second)
	defer acancel()
	if err := catalog.Announce(actx, nc, catalog.DefaultBucket, 1, catalog.Entry{Room: "sales", Title: catalog.Plain("Sales")}); err != nil {
		t.Fatal(err)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if entries, _ := s.List(); len(entries) != 1 || entries[0].Room != "sales" {
			return fmt.Errorf("entries %+v", entries)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
