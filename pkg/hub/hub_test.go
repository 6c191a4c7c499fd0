package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
)

func newNATS(t testing.TB, jetStream bool) *nats.Conn {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true}
	if jetStream {
		opts.JetStream, opts.StoreDir = true, t.TempDir()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newHub(t testing.TB, src Source) *Hub {
	reg := prometheus.NewRegistry()
	return New(src, Options{MaxUpdateBytes: 1 << 16}, metrics.New(reg), reg, slog.New(slog.DiscardHandler))
}

func newBox() *outbox.Outbox {
	return outbox.New(outbox.Limits{ConflateAfter: 1000, MaxMessages: 2000, MaxBytes: 1 << 24}, nil)
}

// drain waits until box holds want messages and returns them as strings.
func drain(t *testing.T, box *outbox.Outbox, want int) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		select {
		case <-box.Ready():
			batch, _ := box.Take(nil)
			for _, m := range batch {
				got = append(got, string(m.AppendJSON(nil)))
			}
		case <-time.After(10 * time.Millisecond):
		}
	}
	if len(got) != want {
		t.Fatalf("got %d messages %q, want %d", len(got), got, want)
	}
	return got
}

// TestOrder checks the contract's order: joined, then the snapshot (the
// latest update this gateway has), then live updates; after left, nothing
// more of the room.
func TestOrder(t *testing.T) {
	nc := newNATS(t, false)
	rooms, err := broker.NewRooms(nc, "roomcast.room", "")
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(t, rooms)
	a, b := newBox(), newBox()

	if err := h.Join(a, JoinRequest{Room: "sales", ID: 1, HasID: true}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the subscription is live on the server
		t.Fatal(err)
	}
	_ = nc.Publish("roomcast.room.sales", []byte(`{"v": 1}`))
	if got := drain(t, a, 2); got[0] != `{"op":"joined","room":"sales","id":1}` || got[1] != `{"op":"update","room":"sales","data":{"v":1}}` {
		t.Fatalf("a got %q", got)
	}

	if err := h.Join(b, JoinRequest{Room: "sales"}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Publish("roomcast.room.sales", []byte(`{"v":2}`))
	got := drain(t, b, 3)
	want := []string{`{"op":"joined","room":"sales"}`, `{"op":"update","room":"sales","data":{"v":1}}`, `{"op":"update","room":"sales","data":{"v":2}}`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("b got %q, want %q", got, want)
	}

	h.Leave(b, "sales", 7, true)
	_ = nc.Publish("roomcast.room.sales", []byte(`{"v":3}`))
	drain(t, a, 2) // v2 and v3: the room is still live for a
	if got := drain(t, b, 1); got[0] != `{"op":"left","room":"sales","id":7}` {
		t.Fatalf("b after leave: %q", got)
	}
	if n, _ := b.Len(); n != 0 {
		t.Fatalf("b got %d messages after left", n)
	}
	if h.Members("sales") != 1 || h.Rooms() != 1 {
		t.Fatalf("members %d rooms %d", h.Members("sales"), h.Rooms())
	}
	h.LeaveAll(a, []string{"sales", "never-joined"})
	if h.Rooms() != 0 {
		t.Fatalf("%d rooms after everyone left", h.Rooms())
	}
}

// fakeSource hands the hub's delivery function to a benchmark, so that the
// fan-out is measured without NATS in the loop.
type fakeSource struct{ deliver func(broker.Delivery) }

func (f *fakeSource) Subscribe(_ string, d func(broker.Delivery)) (broker.Subscription, error) {
	f.deliver = d
	return fakeSub{}, nil
}

type fakeSub struct{}

func (fakeSub) Unsubscribe() error { return nil }

// BenchmarkFanout measures one update from NATS to N local clients:
// validate and compact the payload, encode the frame once, queue it to
// every client's outbox. The writers' share (Take) runs every 16 updates.
// ns/delivery and allocs/op are the figures to compare.
func BenchmarkFanout(b *testing.B) {
	payload := []byte(`{"ts":1700000000000,"timestamp":"12:00:00","sales":4211.5,"orders":117}`)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			src := &fakeSource{}
			h := newHub(b, src)
			boxes := make([]*outbox.Outbox, n)
			for i := range boxes {
				boxes[i] = outbox.New(outbox.Limits{ConflateAfter: 32, MaxMessages: 256, MaxBytes: 1 << 20}, nil)
				if err := h.Join(boxes[i], JoinRequest{Room: "sales"}); err != nil {
					b.Fatal(err)
				}
			}
			batches := make([][]outbox.Message, n)
			d := broker.Delivery{Payload: payload}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				src.deliver(d)
				if i%16 == 15 {
					for j, box := range boxes {
						batches[j], _ = box.Take(batches[j])
						clear(batches[j])
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// manualSource lets a test deliver live updates by hand, so that it can
// make the hub miss some.
type manualSource struct{ deliver func(broker.Delivery) }

func (s *manualSource) Subscribe(_ string, d func(broker.Delivery)) (broker.Subscription, error) {
	s.deliver = d
	return fakeSub{}, nil
}

// TestRepair: the hub sees live updates 1 and 5 of a room (2, 3, 4 were
// missed, as during a NATS reconnect) and must deliver 1..5 in order,
// fetching the missing ones from the stream; Refresh must bring a quiet
// room up to date the same way.
func TestRepair(t *testing.T) {
	nc := newNATS(t, true)
	hcfg := broker.HistoryConfig{Stream: "T", SubjectPrefix: "roomcast.room", LivePrefix: "roomcast.live", Depth: 100, MaxAge: time.Hour, Replicas: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.EnsureStream(ctx, nc, hcfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	src := &manualSource{}
	reg := prometheus.NewRegistry()
	h := New(src, Options{MaxUpdateBytes: 1 << 16, History: broker.NewHistory(nc, hcfg)}, metrics.New(reg), reg, slog.New(slog.DiscardHandler))

	var seqs []uint64
	pub := func(n int) {
		resp, err := nc.Request("roomcast.room.sales", []byte(fmt.Sprintf(`{"n":%d}`, n)), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ack struct{ Seq uint64 }
		_ = json.Unmarshal(resp.Data, &ack)
		seqs = append(seqs, ack.Seq)
	}
	live := func(i int) {
		prev := uint64(0)
		if i > 0 {
			prev = seqs[i-1]
		}
		src.deliver(broker.Delivery{Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)), Seq: seqs[i], Prev: prev})
	}

	box := newBox()
	if err := h.Join(box, JoinRequest{Room: "sales"}); err != nil { // empty room: no snapshot
		t.Fatal(err)
	}
	for i := range 5 {
		pub(i)
	}
	live(0)
	live(4) // 1, 2, 3 missed
	live(2) // a late duplicate: dropped
	want := []string{`{"op":"joined","room":"sales"}`}
	for i := range 5 {
		prev := uint64(0)
		if i > 0 {
			prev = seqs[i-1]
		}
		want = append(want, fmt.Sprintf(`{"op":"update","room":"sales","seq":%d,"prev":%d,"data":{"n":%d}}`, seqs[i], prev, i))
	}
	if got := drain(t, box, len(want)); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Two more updates that never arrive live (the room is quiet since):
	// Refresh fetches them.
	pub(5)
	pub(6)
	h.Refresh(context.Background())
	got := drain(t, box, 2)
	for i, n := range []int{5, 6} {
		if w := fmt.Sprintf(`{"op":"update","room":"sales","seq":%d,"prev":%d,"data":{"n":%d}}`, seqs[n], seqs[n-1], n); got[i] != w {
			t.Fatalf("after refresh: %s, want %s", got[i], w)
		}
	}
}

// TestStreamReset: after the history stream is deleted and created again,
// a room's updates start again from low numbers; the hub must deliver them
// rather than take them for duplicates.
func TestStreamReset(t *testing.T) {
	src := &manualSource{}
	h := newHub(t, src)
	box := newBox()
	if err := h.Join(box, JoinRequest{Room: "sales"}); err != nil {
		t.Fatal(err)
	}
	src.deliver(broker.Delivery{Payload: []byte(`{"n":1}`), Seq: 5000, Prev: 4990})
	src.deliver(broker.Delivery{Payload: []byte(`{"n":1}`), Seq: 4990, Prev: 4980}) // a late duplicate
	src.deliver(broker.Delivery{Payload: []byte(`{"n":2}`), Seq: 3, Prev: 0})       // the new stream
	src.deliver(broker.Delivery{Payload: []byte(`{"n":3}`), Seq: 7, Prev: 3})
	got := drain(t, box, 4)
	want := []string{
		`{"op":"joined","room":"sales"}`,
		`{"op":"update","room":"sales","seq":5000,"prev":4990,"data":{"n":1}}`,
		`{"op":"update","room":"sales","seq":3,"prev":0,"data":{"n":2}}`,
		`{"op":"update","room":"sales","seq":7,"prev":3,"data":{"n":3}}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// BenchmarkJoinLeave measures a join and a leave of one client. "first"
// takes and drops the room's NATS subscription every time (the room's only
// client); "warm" joins a room that keeps other clients, so NATS is not
// touched.
func BenchmarkJoinLeave(b *testing.B) {
	nc := newNATS(b, false)
	rooms, err := broker.NewRooms(nc, "roomcast.room", "")
	if err != nil {
		b.Fatal(err)
	}
	for _, warm := range []bool{false, true} {
		b.Run(map[bool]string{false: "first", true: "warm"}[warm], func(b *testing.B) {
			h := newHub(b, rooms)
			if warm {
				if err := h.Join(newBox(), JoinRequest{Room: "sales"}); err != nil {
					b.Fatal(err)
				}
			}
			box := outbox.New(outbox.Limits{ConflateAfter: 1 << 30, MaxMessages: 1 << 30, MaxBytes: 1 << 30}, nil)
			var batch []outbox.Message
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := h.Join(box, JoinRequest{Room: "sales"}); err != nil {
					b.Fatal(err)
				}
				h.Leave(box, "sales", 0, false)
				if i%64 == 63 {
					batch, _ = box.Take(batch)
					clear(batch)
				}
			}
		})
	}
}

// countingHistory counts Latest calls.
type countingHistory struct {
	History
	latest int
}

func (c *countingHistory) Latest(ctx context.Context, room string, before uint64) (broker.Msg, bool, error) {
	c.latest++
	return c.History.Latest(ctx, room, before)
}

// TestEmptyRoomAskedOnce: joins of a room with nothing stored ask the
// stream once, not once per join (seen in W4 churn: +37 µs per join).
func TestEmptyRoomAskedOnce(t *testing.T) {
	nc := newNATS(t, true)
	hcfg := broker.HistoryConfig{Stream: "T", SubjectPrefix: "roomcast.room", LivePrefix: "roomcast.live", Depth: 100, MaxAge: time.Hour, Replicas: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.EnsureStream(ctx, nc, hcfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	hist := &countingHistory{History: broker.NewHistory(nc, hcfg)}
	reg := prometheus.NewRegistry()
	h := New(&manualSource{}, Options{MaxUpdateBytes: 1 << 16, History: hist}, metrics.New(reg), reg, slog.New(slog.DiscardHandler))
	keep := newBox() // holds the room open
	if err := h.Join(keep, JoinRequest{Room: "empty"}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		b := newBox()
		if err := h.Join(b, JoinRequest{Room: "empty"}); err != nil {
			t.Fatal(err)
		}
		h.Leave(b, "empty", 0, false)
	}
	if hist.latest != 1 {
		t.Fatalf("Latest asked %d times, want 1", hist.latest)
	}
}
