package producer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/producer"
)

var fixed = time.UnixMilli(1700000000123)

func newPublisher(t *testing.T) (*producer.Publisher, *nats.Subscription, *nats.Conn) {
	t.Helper()
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	sub, err := nc.SubscribeSync("roomcast.room.>")
	if err != nil {
		t.Fatal(err)
	}
	// The publisher uses another connection: without a round trip the
	// first publish can reach the server before this interest does.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(roomtest.Connect(t, ns), producer.Options{Now: func() time.Time { return fixed }})
	if err != nil {
		t.Fatal(err)
	}
	return p, sub, nc
}

func next(t *testing.T, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGenerators(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		m    producer.Metric
	}{
		{"uniform whole", producer.Metric{Generator: "uniform", Min: 1000, Max: 5000}},
		{"uniform decimals", producer.Metric{Generator: "uniform", Min: 0, Max: 1, Decimals: 2}},
		{"walk", producer.Metric{Generator: "walk", Min: 10, Max: 20, Step: 0.5, Decimals: 1}},
		{"walk default step", producer.Metric{Generator: "walk", Min: 0, Max: 100}},
		{"constant", producer.Metric{Generator: "uniform", Min: 7, Max: 7}},
	}
	for _, tt := range tests {
		g := producer.NewGenerator(tt.m, rnd)
		prev := math.NaN()
		step := tt.m.Step
		if step == 0 {
			step = (tt.m.Max - tt.m.Min) / 20
		}
		scale := math.Pow(10, float64(tt.m.Decimals))
		for i := 0; i < 1000; i++ {
			v := g.Next()
			if v < tt.m.Min || v > tt.m.Max {
				t.Fatalf("%s: %v outside [%v, %v]", tt.name, v, tt.m.Min, tt.m.Max)
			}
			if r := v * scale; math.Abs(r-math.Round(r)) > 1e-6 {
				t.Fatalf("%s: %v has more than %d decimals", tt.name, v, tt.m.Decimals)
			}
			if tt.m.Generator == "walk" && !math.IsNaN(prev) && math.Abs(v-prev) > step+1/scale {
				t.Fatalf("%s: walked %v → %v, step %v", tt.name, prev, v, step)
			}
			prev = v
		}
	}
}

// TestDemoRoomsPublish: the simulated sales day and visitors publish
// believable, consistent updates that match their catalogue entries.
func TestDemoRoomsPublish(t *testing.T) {
	t.Parallel()
	p, sub, _ := newPublisher(t)
	ctx, cancel := context.WithCancel(context.Background())
	rooms := config.DemoRooms()
	for i := range rooms {
		rooms[i].Interval = 20 * time.Millisecond
	}
	for _, r := range rooms {
		e := producer.RoomEntry(r)
		if err := e.Validate(); err != nil {
			t.Fatalf("entry of %s: %v", r.Room, err)
		}
	}
	done := make(chan struct{})
	go func() {
		producer.Run(ctx, p, rooms, time.Hour, roomtest.Logger(t))
		close(done)
	}()
	seen := map[string]int{}
	var lastSales float64
	for seen["roomcast.room.sales"] < 5 || seen["roomcast.room.visitors"] < 2 {
		m := next(t, sub)
		var v map[string]any
		if err := json.Unmarshal(m.Data, &v); err != nil {
			t.Fatal(err)
		}
		switch m.Subject {
		case "roomcast.room.sales":
			s := v["sales"].(float64)
			if s < lastSales {
				t.Fatalf("today's sales went down: %v after %v", s, lastSales)
			}
			lastSales = s
			if len(v["products"].([]any)) != 7 || len(v["regions"].([]any)) != 7 || len(v["channels"].(map[string]any)) != 4 {
				t.Fatalf("sales update %v", v)
			}
			top := v["products"].([]any)
			if top[0].(map[string]any)["value"].(float64) < top[1].(map[string]any)["value"].(float64) {
				t.Fatalf("products not ranked: %v", top)
			}
			for _, k := range []string{"sales_lw", "orders", "orders_yd", "per_minute"} {
				if _, ok := v[k].(float64); !ok {
					t.Fatalf("sales update without %s: %v", k, v)
				}
			}
			if _, ok := v["latest"].([]any); !ok {
				t.Fatalf("latest %v", v["latest"])
			}
		case "roomcast.room.visitors":
			if c := v["conversion"].(float64); c <= 0 || c > 0.5 {
				t.Fatalf("conversion %v", c)
			}
			if n := v["online"].(float64); n <= 0 {
				t.Fatalf("online %v", n)
			}
		default:
			t.Fatalf("subject %s", m.Subject)
		}
		if v["ts"].(float64) != float64(fixed.UnixMilli()) || len(v["timestamp"].(string)) != 8 {
			t.Fatalf("ts/timestamp: %v", v)
		}
		seen[m.Subject]++
	}
	cancel()
	<-done
}

func TestPublishJSON(t *testing.T) {
	t.Parallel()
	p, sub, _ := newPublisher(t)
	tests := []struct {
		in, want string
		bad      bool
	}{
		{`{"sales": 12}`, `{"ts":1700000000123,"sales":12}`, false},
		{`{}`, `{"ts":1700000000123}`, false},
		{`{"ts":5,"a":[1, 2]}`, `{"ts":5,"a":[1,2]}`, false},
		{`{"nested":{"ts":1}}`, `{"ts":1700000000123,"nested":{"ts":1}}`, false},
		{`[1]`, ``, true},
		{`{"a":`, ``, true},
		{"{\"a\":\"\xff\"}", ``, true},
	}
	for _, tt := range tests {
		err := p.PublishJSON("sales", []byte(tt.in))
		if tt.bad {
			if err == nil {
				t.Errorf("%q: accepted", tt.in)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		if got := string(next(t, sub).Data); got != tt.want {
			t.Errorf("%q: published %s, want %s", tt.in, got, tt.want)
		}
	}
	if err := p.PublishJSON("a.b", []byte(`{}`)); err == nil {
		t.Error("room a.b accepted")
	}
	if err := p.Publish(">", map[string]any{"x": 1}); err == nil {
		t.Error("room > accepted")
	}
	if got, want := p.Stats(), (producer.Stats{Published: 4, Errors: 5}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

func TestPublishLines(t *testing.T) {
	t.Parallel()
	p, sub, _ := newPublisher(t)
	input := strings.Join([]string{
		`{"sales": 1}`,
		``,
		`not json`,
		`  {"sales": 2}  `,
		`[1,2]`,
		`{"sales":`,
		`{"big":"` + strings.Repeat("x", producer.MaxLineBytes) + `"}`,
		"{\"a\":\"\xff\"}",
		`{"sales": 3}`, // no final newline
	}, "\n")
	var stderr strings.Builder
	res, err := producer.PublishLines(strings.NewReader(input), "sales", p, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 3 || res.Skipped != 5 {
		t.Fatalf("result %+v, stderr:\n%s", res, stderr.String())
	}
	for _, n := range []int{3, 5, 6, 7, 8} {
		if !strings.Contains(stderr.String(), fmt.Sprintf("line %d:", n)) {
			t.Errorf("stderr does not report line %d:\n%s", n, stderr.String())
		}
	}
	if strings.Count(stderr.String(), "\n") != 5 {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	for i := 1; i <= 3; i++ {
		if got, want := string(next(t, sub).Data), fmt.Sprintf(`{"ts":1700000000123,"sales":%d}`, i); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

func TestAnnounce(t *testing.T) {
	t.Parallel()
	p, _, nc := newPublisher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e := catalog.Entry{Room: "sales_cn", Title: catalog.Plain("销售"), Metrics: []catalog.Metric{{Key: "sales", Label: catalog.Plain("销售额"), Unit: catalog.Plain("元")}}}
	if err := p.Announce(ctx, e); err != nil {
		t.Fatal(err)
	}
	// Announced twice (re-announcement) is fine.
	if err := p.Announce(ctx, e); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, catalog.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kv.Get(ctx, "sales_cn")
	if err != nil {
		t.Fatal(err)
	}
	if parsed, err := catalog.Parse("sales_cn", got.Value()); err != nil || parsed.Metrics[0].Label.String() != "销售额" {
		t.Fatalf("stored entry %s: %v", got.Value(), err)
	}
	if err := p.Announce(ctx, catalog.Entry{Room: "bad.room", Title: catalog.Plain("x")}); err == nil {
		t.Fatal("invalid entry announced")
	}
}

// TestBackfill: RunFrom publishes the last minutes of a generated room
// first, oldest first, each with the ts it stands for, spread over the
// backfill and bounded in count; then live samples follow.
func TestBackfill(t *testing.T) {
	t.Parallel()
	p, sub, _ := newPublisher(t)
	ctx, cancel := context.WithCancel(context.Background())
	rooms := config.DemoRooms()[:1] // sales, every second
	start := time.Now()
	done := make(chan struct{})
	go func() {
		producer.RunFrom(ctx, p, rooms, time.Hour, 5*time.Minute, roomtest.Logger(t))
		close(done)
	}()
	var ts []float64
	var sales []float64
	for len(ts) < 90 {
		var v map[string]any
		if err := json.Unmarshal(next(t, sub).Data, &v); err != nil {
			t.Fatal(err)
		}
		ts, sales = append(ts, v["ts"].(float64)), append(sales, v["sales"].(float64))
	}
	cancel()
	<-done
	first, last := time.UnixMilli(int64(ts[0])), time.UnixMilli(int64(ts[len(ts)-1]))
	if d := start.Sub(first); d < 4*time.Minute || d > 6*time.Minute {
		t.Errorf("first backfilled sample %v before the start, want about 5m", d)
	}
	if last.After(time.Now()) || start.Sub(last) > 10*time.Second {
		t.Errorf("last backfilled sample at %v, start %v", last, start)
	}
	for i := 1; i < len(ts); i++ {
		if ts[i] <= ts[i-1] || sales[i] < sales[i-1] {
			t.Fatalf("sample %d: ts %v after %v, sales %v after %v: not in order", i, ts[i], ts[i-1], sales[i], sales[i-1])
		}
	}
}
