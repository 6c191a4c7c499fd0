package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/internal/roomtest"
)

// publish publishes an update the way a producer does, but as a request so
// that the stream's acknowledgement tells the test its seq.
func publish(t testing.TB, nc *nats.Conn, room, data string) uint64 {
	t.Helper()
	resp, err := nc.Request("roomcast.room."+room, []byte(data), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ack struct {
		Seq   uint64 `json:"seq"`
		Error *struct{ Description string }
	}
	if err := json.Unmarshal(resp.Data, &ack); err != nil || ack.Error != nil || ack.Seq == 0 {
		t.Fatalf("publish ack %s: %v", resp.Data, err)
	}
	return ack.Seq
}

// TestSnapshotAndResume covers what a join gets from history, table-driven
// over the edge cases of since. Each case has its own room with updates
// 0..9 (depth 5 keeps 4..9, the oldest as the anchor of a resume from it, interleaved with another room's updates so
// that seqs are not consecutive) and joins on a gateway with no client in
// the room yet, so the snapshot or replay must come from the stream. After
// it, a live update must continue the chain: no duplicate, no gap.
func TestSnapshotAndResume(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.History.Depth = 5
	g := roomtest.StartGateway(t, cfg)

	type upd struct {
		n      int
		missed bool
	}
	tests := []struct {
		name  string
		since func(seqs []uint64) string // the join's since field, "" for none
		want  []upd                      // updates expected before the live one
	}{
		{"plain join gets the latest", func([]uint64) string { return "" }, []upd{{9, false}}},
		{"since 0 is a plain join", func([]uint64) string { return `,"since":0` }, []upd{{9, false}}},
		{"since the last gets nothing", func(s []uint64) string { return fmt.Sprintf(`,"since":%d`, s[9]) }, nil},
		{"since in history replays the rest", func(s []uint64) string { return fmt.Sprintf(`,"since":%d`, s[6]) }, []upd{{7, false}, {8, false}, {9, false}}},
		{"since the oldest kept", func(s []uint64) string { return fmt.Sprintf(`,"since":%d`, s[5]) }, []upd{{6, false}, {7, false}, {8, false}, {9, false}}},
		{"since older than history gets what is stored, first flagged", func(s []uint64) string { return fmt.Sprintf(`,"since":%d`, s[2]) }, []upd{{4, true}, {5, false}, {6, false}, {7, false}, {8, false}, {9, false}}},
		{"since ahead of the last", func(s []uint64) string { return fmt.Sprintf(`,"since":%d`, s[9]+1000) }, []upd{{9, true}}},
		{"since of another room", func(s []uint64) string { return fmt.Sprintf(`,"since":%d`, s[7]+1) }, []upd{{8, true}, {9, false}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := fmt.Sprintf("r%d", i)
			var seqs []uint64
			for n := range 10 {
				seqs = append(seqs, publish(t, nc, room, fmt.Sprintf(`{"n":%d}`, n)))
				publish(t, nc, "other", `{"x":1}`)
			}
			c := roomtest.Dial(t, g)
			c.Send(`{"op":"join","room":"` + room + `"` + tt.since(seqs) + `}`)
			c.Expect("joined")
			for _, w := range tt.want {
				m := c.Expect("update")
				var d struct{ N int }
				_ = json.Unmarshal(m.Data, &d)
				if d.N != w.n || m.Seq != seqs[w.n] || m.Missed != w.missed {
					t.Fatalf("got n=%d seq=%d missed=%v, want n=%d seq=%d missed=%v", d.N, m.Seq, m.Missed, w.n, seqs[w.n], w.missed)
				}
				// A missed update's prev is what the client said it had.
				if m.Prev == nil || (*m.Prev != seqs[w.n-1] && !w.missed) {
					t.Fatalf("update %d: prev %v, want %d", w.n, m.Prev, seqs[w.n-1])
				}
			}
			roomtest.WaitSubscriptions(t, ns, "roomcast.live."+room, 1)
			seq := publish(t, nc, room, `{"n":10}`)
			m := c.Expect("update")
			if m.Seq != seq || m.Prev == nil || *m.Prev != seqs[9] || m.Missed {
				t.Fatalf("live update %+v, want seq %d prev %d", m, seq, seqs[9])
			}
		})
	}
}

// TestLiveSequence: updates carry strictly increasing seq per room and a
// prev chain without holes, in every room.
func TestLiveSequence(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	// The burst below must not be conflated: that would be a gap too.
	cfg.Queue.ConflateAfter, cfg.Queue.MaxMessages = 1000, 2000
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, g.Embedded())
	c := roomtest.Dial(t, g)
	c.Join("a")
	c.Join("b")
	roomtest.WaitSubscriptions(t, g.Embedded(), "roomcast.live.b", 1)
	for i := range 50 {
		_ = nc.Publish("roomcast.room.a", []byte(fmt.Sprintf(`{"i":%d}`, i)))
		_ = nc.Publish("roomcast.room.b", []byte(fmt.Sprintf(`{"i":%d}`, i)))
	}
	last := map[string]uint64{}
	for range 100 {
		m := c.Expect("update")
		if m.Prev == nil || *m.Prev != last[m.Room] || m.Seq <= last[m.Room] {
			t.Fatalf("room %s: seq %d prev %v after %d", m.Room, m.Seq, m.Prev, last[m.Room])
		}
		last[m.Room] = m.Seq
	}
}

// TestRoomLinger: an emptied room keeps its subscription for room_linger,
// a join within it reuses the subscription, and it is gone once the
// linger has passed.
func TestRoomLinger(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.RoomLinger = 500 * time.Millisecond
	g := roomtest.StartGateway(t, cfg)
	ns := g.Embedded()
	c := roomtest.Dial(t, g)
	c.Join("sales")
	roomtest.WaitSubscriptions(t, ns, salesLive, 1)
	sid := func() string {
		sz, _ := ns.Subsz(&server.SubszOptions{Subscriptions: true, Test: salesLive})
		if len(sz.Subs) != 1 {
			return ""
		}
		return sz.Subs[0].Sid
	}
	first := sid()
	c.Send(`{"op":"leave","room":"sales"}`)
	c.Expect("left")
	c.Join("sales") // within the linger: the same subscription
	if got := sid(); got != first {
		t.Fatalf("subscription %q after re-join within the linger, want %q", got, first)
	}
	left := time.Now()
	c.Send(`{"op":"leave","room":"sales"}`)
	c.Expect("left")
	roomtest.WaitSubscriptions(t, ns, salesLive, 0)
	if d := time.Since(left); d < cfg.RoomLinger {
		t.Fatalf("subscription gone after %v, linger is %v", d, cfg.RoomLinger)
	}
}

// TestDrainSpreadsCloses: a shutdown with a drain window closes clients
// one after another across the window, all with 1012.
func TestDrainSpreadsCloses(t *testing.T) {
	t.Parallel()
	for _, writer := range writers {
		t.Run(writer, func(t *testing.T) {
			t.Parallel()
			testDrainSpreadsCloses(t, writer)
		})
	}
}

func testDrainSpreadsCloses(t *testing.T, writer string) {
	cfg := roomtest.Config(t, "")
	useWriter(&cfg, writer)
	cfg.DrainWindow = time.Second
	g := roomtest.StartGateway(t, cfg)
	const n = 10
	closed := make(chan time.Time, n)
	for range n {
		c := roomtest.Dial(t, g)
		c.Join("sales")
		go func() {
			if code := c.ExpectCloseCode(10 * time.Second); code == 1012 {
				closed <- time.Now()
			} else {
				closed <- time.Time{}
			}
		}()
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var first, last time.Time
	for range n {
		at := <-closed
		if at.IsZero() {
			t.Fatal("a client was not closed with 1012")
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	if spread := last.Sub(first); spread < cfg.DrainWindow/2 {
		t.Fatalf("closes spread over %v, drain window %v", spread, cfg.DrainWindow)
	}
	if took := time.Since(start); took > cfg.ShutdownTimeout {
		t.Fatalf("shutdown took %v", took)
	}
}

// TestNoJetStream: on a NATS without JetStream the gateway warns and runs
// without history: updates without seq, the snapshot from its own cache,
// since refused.
func TestNoJetStream(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATSWith(t, &server.Options{})
	g := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	nc := roomtest.Connect(t, ns)
	a := roomtest.Dial(t, g)
	a.Join("sales")
	roomtest.WaitSubscriptions(t, ns, salesSubject, 1)
	publishAndExpect(t, nc, a, "first")
	b := roomtest.Dial(t, g)
	b.Join("sales")
	if m := b.Expect("update"); m.Seq != 0 || m.Prev != nil || string(m.Data) != `{"mark":"first"}` {
		t.Fatalf("snapshot from the cache: %+v", m)
	}
	b.Send(`{"op":"join","room":"visitors","since":5}`)
	if m := b.Expect("error"); m.Code != "history_unavailable" {
		t.Fatalf("reply %+v", m)
	}
}
