package client_test

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/client"
	"github.com/roomcast/roomcast/pkg/hub"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// source is a room source that subscribes in memory, or fails when down.
type source struct {
	down atomic.Bool
	mu   sync.Mutex
	subs int
}

func (s *source) Subscribe(string, func(broker.Delivery)) (broker.Subscription, error) {
	if s.down.Load() {
		return nil, errors.New("nats: connection closed")
	}
	s.mu.Lock()
	s.subs++
	s.mu.Unlock()
	return sub{s}, nil
}

type sub struct{ s *source }

func (u sub) Unsubscribe() error {
	u.s.mu.Lock()
	u.s.subs--
	u.s.mu.Unlock()
	return nil
}

func (s *source) active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subs
}

// grant allows the rooms listed and ends after ttl (never if 0).
type grant struct {
	rooms map[string]bool
	ttl   time.Duration
}

func (g grant) Allows(room string) bool { return g.rooms == nil || g.rooms[room] }
func (g grant) ExpiresIn(time.Time) (time.Duration, bool) {
	return g.ttl, g.ttl != 0
}

func newClient(t *testing.T, opts client.Options, onExpire func()) (*client.Client, *source, *hub.Hub) {
	t.Helper()
	src := &source{}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	h := hub.New(src, hub.Options{MaxUpdateBytes: 1 << 16}, m, reg, slog.New(slog.DiscardHandler))
	box := outbox.New(outbox.Limits{ConflateAfter: 32, MaxMessages: 256, MaxBytes: 1 << 20}, nil)
	return client.New(h, box, opts, m, onExpire), src, h
}

// replies takes what the client's queue holds, as native JSON.
func replies(c *client.Client) []string {
	batch, _ := c.Box().Take(nil)
	out := make([]string, len(batch))
	for i := range batch {
		out[i] = string(batch[i].AppendJSON(nil))
	}
	return out
}

func join(room string, id int64) protocol.Command {
	return protocol.Command{Op: protocol.OpJoin, Room: room, ID: id, HasID: true}
}

// TestJoinRules: every rule of joining, in one place for every transport,
// answered with the protocol's error replies.
func TestJoinRules(t *testing.T) {
	t.Parallel()
	opts := client.Options{MaxRooms: 2, CommandRate: 100, CommandBurst: 10}
	tests := []struct {
		name  string
		opts  client.Options
		grant client.Grant
		cmds  []protocol.Command
		want  []string
		rooms int
	}{
		{"join and leave", opts, nil,
			[]protocol.Command{join("sales", 1), {Op: protocol.OpLeave, Room: "sales", ID: 2, HasID: true}},
			[]string{`{"op":"joined","room":"sales","id":1}`, `{"op":"left","room":"sales","id":2}`}, 0},
		{"a token that does not grant the room", opts, grant{rooms: map[string]bool{"sales": true}},
			[]protocol.Command{join("hr", 1)},
			[]string{`{"op":"error","code":"forbidden","message":"your token does not grant this room","room":"hr","id":1}`}, 0},
		{"since without history", opts, nil,
			[]protocol.Command{{Op: protocol.OpJoin, Room: "sales", HasSince: true, Since: 4}},
			[]string{`{"op":"error","code":"history_unavailable","message":"this gateway runs without history; join without since or history","room":"sales"}`}, 0},
		{"a history window without history", opts, nil,
			[]protocol.Command{{Op: protocol.OpJoin, Room: "sales", HistoryCount: 10}},
			[]string{`{"op":"error","code":"history_unavailable","message":"this gateway runs without history; join without since or history","room":"sales"}`}, 0},
		{"too many rooms", opts, nil,
			[]protocol.Command{join("a", 1), join("b", 2), join("c", 3), join("a", 4)},
			[]string{`{"op":"joined","room":"a","id":1}`, `{"op":"joined","room":"b","id":2}`,
				`{"op":"error","code":"too_many_rooms","message":"a connection may join at most 2 rooms","room":"c","id":3}`,
				`{"op":"joined","room":"a","id":4}`}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, src, _ := newClient(t, tt.opts, nil)
			c.SetGrant(tt.grant)
			for _, cmd := range tt.cmds {
				if r := c.Command(cmd); r != client.Done {
					t.Fatalf("%+v: result %v", cmd, r)
				}
			}
			got := replies(c)
			if len(got) != len(tt.want) {
				t.Fatalf("replies %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("reply %d: %s, want %s", i, got[i], tt.want[i])
				}
			}
			if n := c.Rooms(); n != tt.rooms {
				t.Errorf("in %d rooms, want %d", n, tt.rooms)
			}
			c.Close()
			if n := src.active(); n != 0 {
				t.Errorf("%d subscriptions left after Close", n)
			}
		})
	}
}

// TestUnavailable: a hub that cannot subscribe is the transport's to act
// on (it closes the connection); nothing is joined.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	c, src, _ := newClient(t, client.Options{MaxRooms: 4, CommandRate: 10, CommandBurst: 10}, nil)
	src.down.Store(true)
	if r := c.Command(join("sales", 1)); r != client.Unavailable {
		t.Fatalf("result %v, want Unavailable", r)
	}
	if c.Rooms() != 0 {
		t.Fatal("a failed join counts as a room")
	}
}

// TestSpend: the budget allows the burst, refuses beyond it, and calls a
// flood what goes past the burst again in a row; an allowed command
// resets the count.
func TestSpend(t *testing.T) {
	t.Parallel()
	c, _, _ := newClient(t, client.Options{MaxRooms: 1, CommandRate: 1, CommandBurst: 3}, nil)
	now := time.Now()
	var got []client.Spent
	for range 8 {
		got = append(got, c.Spend(now))
	}
	want := []client.Spent{client.Allowed, client.Allowed, client.Allowed,
		client.Limited, client.Limited, client.Limited, client.Flooded, client.Flooded}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("spend %d: %v, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
	if s := c.Spend(now.Add(2 * time.Second)); s != client.Allowed {
		t.Fatalf("after the refill: %v", s)
	}
	if s := c.Spend(now.Add(2 * time.Second)); s != client.Allowed {
		t.Fatalf("the second token of the refill: %v", s)
	}
	if s := c.Spend(now.Add(2 * time.Second)); s != client.Limited {
		t.Fatalf("refused after an allowed one: %v, want Limited (the count was reset)", s)
	}
}

// TestExpiry: the earliest of the grants given closes the client; Close
// stops it.
func TestExpiry(t *testing.T) {
	t.Parallel()
	expired := make(chan time.Time, 2)
	c, _, _ := newClient(t, client.Options{MaxRooms: 1, CommandRate: 1, CommandBurst: 1}, func() { expired <- time.Now() })
	start := time.Now()
	c.SetGrant(grant{ttl: time.Hour})
	c.ExpireWith(grant{ttl: 50 * time.Millisecond})
	c.ExpireWith(grant{ttl: time.Hour}) // later: does not replace the earlier one
	select {
	case at := <-expired:
		if at.Sub(start) > 5*time.Second {
			t.Fatalf("expired after %v", at.Sub(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the 50ms grant never expired")
	}

	c2, _, _ := newClient(t, client.Options{MaxRooms: 1, CommandRate: 1, CommandBurst: 1}, func() { expired <- time.Now() })
	c2.SetGrant(grant{ttl: 30 * time.Millisecond})
	c2.Close()
	select {
	case <-expired:
		t.Fatal("a closed client's grant expired")
	case <-time.After(200 * time.Millisecond): // a timer that was stopped does not fire
	}
}

// TestCloseDuringJoin: a teardown racing joins leaves no room joined and
// no subscription behind, and joins after it do nothing.
func TestCloseDuringJoin(t *testing.T) {
	t.Parallel()
	for range 50 {
		c, src, h := newClient(t, client.Options{MaxRooms: 8, CommandRate: 1000, CommandBurst: 1000}, nil)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, room := range []string{"a", "b", "c", "d"} {
				c.Command(join(room, int64(i)))
			}
		}()
		c.Close()
		wg.Wait()
		c.Command(join("e", 9))
		if n := h.Rooms(); n != 0 {
			t.Fatalf("hub has %d rooms after Close", n)
		}
		if n := src.active(); n != 0 {
			t.Fatalf("%d subscriptions left", n)
		}
	}
}
