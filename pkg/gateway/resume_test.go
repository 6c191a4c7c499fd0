package gateway_test

import (
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/internal/sockettest"
	"github.com/roomcast/roomcast/pkg/config"
)

// smallestQueues is the tightest slow-client policy config allows, so that
// a replay that went through the queue as live traffic does would be
// conflated or overflow at once.
func smallestQueues(cfg *config.Config) {
	cfg.Limits.MaxUpdateBytes = 1024
	cfg.Queue.ConflateAfter = 1
	cfg.Queue.MaxMessages = 2
	cfg.Queue.MaxBytes = 4 * cfg.Limits.MaxUpdateBytes
}

// publishAt publishes n updates of room at rate per second and returns
// their seqs.
func publishAt(t testing.TB, nc *nats.Conn, room string, n int, rate float64, first int) []uint64 {
	t.Helper()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	seqs := make([]uint64, 0, n)
	for i := range n {
		seqs = append(seqs, publish(t, nc, room, fmt.Sprintf(`{"n":%d}`, first+i)))
		<-tick.C
	}
	return seqs
}

// expectChain reads updates and fails unless they are exactly want, in
// order, each prev the seq before it (prev0 for the first), the first
// flagged missed if missed and no other.
func expectChain(t *testing.T, c *roomtest.Client, want []uint64, prev0 uint64, missed bool) {
	t.Helper()
	prev := prev0
	for i, seq := range want {
		m, err := c.Next(10 * time.Second)
		if err != nil {
			t.Fatalf("update %d of %d (seq %d): %v", i+1, len(want), seq, err)
		}
		if m.Op != "update" || m.Seq != seq {
			t.Fatalf("update %d of %d: got %s seq %d, want seq %d", i+1, len(want), m.Op, m.Seq, seq)
		}
		if wantMissed := missed && i == 0; m.Missed != wantMissed {
			t.Fatalf("update %d (seq %d): missed %v, want %v", i+1, seq, m.Missed, wantMissed)
		}
		if !m.Missed && (m.Prev == nil || *m.Prev != prev) {
			t.Fatalf("update %d (seq %d): prev %v, want %d", i+1, seq, m.Prev, prev)
		}
		prev = seq
	}
}

// TestResumeTable: a client away for N updates of a room published at
// 50 Hz resumes with since, on the gateway it left (which kept the room:
// memory, or the stream past it) or on another one (a cold room: the
// stream). Up to history.depth it gets every update, in order, then live
// ones with no gap and no duplicate; past depth what is stored, the first
// flagged missed. Queues are the smallest config allows: a replay pushed
// like live traffic would be conflated or overflow.
func TestResumeTable(t *testing.T) {
	// Both writers: the loop writer pages a replay from its write loop,
	// which the smallest queues exercise at every page.
	for _, writer := range writers {
		t.Run(writer, func(t *testing.T) { resumeTable(t, writer) })
	}
}

func resumeTable(t *testing.T, writer string) {
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	cfg := roomtest.Config(t, ns.ClientURL())
	useWriter(&cfg, writer)
	cfg.History.Depth = 100
	cfg.History.Memory = 100
	smallestQueues(&cfg)
	a := roomtest.StartGateway(t, cfg)
	b := roomtest.StartGateway(t, cfg)

	const depth = 100
	for _, n := range []int{1, 31, 32, 33, 100, 150} {
		for _, where := range []string{"same", "other"} {
			t.Run(fmt.Sprintf("%d/%s", n, where), func(t *testing.T) {
				t.Parallel()
				room := fmt.Sprintf("resume-%d-%s", n, where)
				watcher := roomtest.Dial(t, a) // keeps the room on a
				watcher.Join(room)
				c := roomtest.Dial(t, a)
				c.Join(room)
				// One at a time, as the live phase below: with the
				// smallest queues two updates queued at once are
				// conflated, as they should be, when the reader is slow
				// (it failed so in CI under -race); here they only set
				// since.
				var since uint64
				for i := range 3 {
					seq := publish(t, nc, room, fmt.Sprintf(`{"n":%d}`, i))
					expectChain(t, c, []uint64{seq}, since, false)
					since = seq
				}
				c.Conn.Close()

				away := publishAt(t, nc, room, n, 50, 3)
				g := a
				if where == "other" {
					g = b
				}
				c = roomtest.Dial(t, g)
				c.Send(fmt.Sprintf(`{"op":"join","room":%q,"since":%d}`, room, since))
				c.Expect("joined")
				if n <= depth {
					expectChain(t, c, away, since, false)
				} else {
					// The stream keeps depth+1: the anchor of a resume
					// exactly depth behind, here the first one sent.
					expectChain(t, c, away[n-depth-1:], 0, true)
				}
				// Live ones one at a time: with the smallest queues two
				// live updates queued at once are conflated, as they
				// should be, whenever the reader is slow (a loaded
				// machine); the point here is the step from replay to
				// live, with no gap and no duplicate.
				prev := away[n-1]
				for i := range 3 {
					seq := publish(t, nc, room, fmt.Sprintf(`{"n":%d}`, 3+n+i))
					expectChain(t, c, []uint64{seq}, prev, false)
					prev = seq
				}
			})
		}
	}
}

// TestResumeLoopBudget: 20 connections join with an old since (beyond the
// room's memory: each resume costs a stream read) and leave, in a loop as
// fast as they are answered. The stream reads stay within the connections'
// resume budget, the loopers are told rate_limited, and the room's other
// clients keep their latency.
func TestResumeLoopBudget(t *testing.T) {
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.History.Memory = 5
	cfg.History.ResumeBurst = 5 // reached in the first second even under the race detector
	g := roomtest.StartGateway(t, cfg)
	const room = "loop"
	seqs := publishAt(t, nc, room, 20, 200, 0)
	old := seqs[2]

	stop := produce(t, nc, room)
	defer stop()
	var watchers []*roomtest.Resumer
	for range 10 {
		w := roomtest.StartResumer([]string{g.Addr().String()}, 0, []string{room})
		defer w.Stop()
		watchers = append(watchers, w)
	}
	time.Sleep(2 * time.Second) // the watchers' latency before the loop

	requests := func() float64 { return metric(t, g, "roomcast_history_requests_total") }
	before, start := requests(), time.Now()
	const loopers, loopFor, maxLoop = 20, 3 * time.Second, 30 * time.Second
	var wg sync.WaitGroup
	var limited atomic.Int64
	for range loopers {
		conn, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Read until the reply to the last command; count refusals.
			await := func(op string) bool {
				for {
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					_, frame, err := conn.ReadMessage()
					if err != nil {
						return false
					}
					for _, line := range strings.Split(string(frame), "\n") {
						var m roomtest.Msg
						_ = json.Unmarshal([]byte(line), &m)
						switch {
						case m.Op == "error" && m.Code == "rate_limited":
							limited.Add(1)
							return true
						case m.Op == op || m.Op == "error":
							return true
						}
					}
				}
			}
			// At least loopFor, and on until the budget has refused
			// someone: a starved machine (the race detector, CI running
			// packages side by side) loops slowly and reaches the budget
			// later, which is no failure of the budget.
			for d := time.Since(start); d < loopFor || limited.Load() == 0 && d < maxLoop; d = time.Since(start) {
				_ = conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"op":"join","room":%q,"since":%d}`, room, old))
				if !await("joined") {
					return
				}
				_ = conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"op":"leave","room":%q}`, room))
				if !await("left") {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	reads := requests() - before
	budget := float64(loopers) * (float64(cfg.History.ResumeBurst) + cfg.History.ResumesPerSecond*elapsed.Seconds())
	t.Logf("%d loopers for %v: %.0f stream reads (budget %.0f, %.0f/s), %d resumes refused rate_limited",
		loopers, elapsed.Round(time.Millisecond), reads, budget, reads/elapsed.Seconds(), limited.Load())
	if reads > budget {
		t.Errorf("%.0f stream reads, more than the budget allows (%.0f)", reads, budget)
	}
	if limited.Load() == 0 {
		t.Error("no resume was refused: the loop never reached the budget")
	}
	var pre, during []time.Duration
	for _, w := range watchers {
		for _, l := range w.Result().Latency {
			switch {
			case l.At.Before(start):
				pre = append(pre, l.D)
			case l.At.Before(start.Add(elapsed)):
				during = append(during, l.D)
			}
		}
	}
	t.Logf("watchers: before p50 %v p99 %v; during the loop p50 %v p99 %v",
		percentile(pre, .5), percentile(pre, .99), percentile(during, .5), percentile(during, .99))
	if p99 := percentile(during, .99); p99 > 100*time.Millisecond && !roomtest.Race {
		t.Errorf("watchers' p99 %v during the loop, want < 100ms", p99)
	}
	for i, w := range watchers {
		if r := w.Result(); len(r.Gaps) > 0 || r.Dups > 0 {
			t.Errorf("watcher %d: gaps %v, duplicates %d", i, r.Gaps, r.Dups)
		}
	}
}

// TestHistoryOnJoin: a join that asks for recent history gets it, by count
// or by age, from the gateway's memory or from the stream, in order, then
// live updates with no gap (real NATS and sockets).
func TestHistoryOnJoin(t *testing.T) {
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.History.Memory = 10
	g := roomtest.StartGateway(t, cfg)
	for _, tc := range []struct {
		name    string
		history string
		warm    bool // another client keeps the room on the gateway: its memory has the last 10
		first   int  // the first update expected, of 0..29
	}{
		{"count from memory", `5`, true, 25},
		{"count from the stream", `20`, true, 10},
		{"count on a cold room", `5`, false, 25},
		{"more than stored", `500`, false, 0},
		{"age from the stream", `"1h"`, true, 0},
		{"age on a cold room", `"1h"`, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			room := "hist-" + strings.ReplaceAll(tc.name, " ", "-")
			if tc.warm {
				roomtest.Dial(t, g).Join(room)
			}
			seqs := publishAt(t, nc, room, 30, 500, 0)
			c := roomtest.Dial(t, g)
			c.Send(fmt.Sprintf(`{"op":"join","room":%q,"history":%s}`, room, tc.history))
			c.Expect("joined")
			prev := uint64(0)
			if tc.first > 0 {
				prev = seqs[tc.first-1]
			}
			expectChain(t, c, seqs[tc.first:], prev, false)
			live := publishAt(t, nc, room, 2, 50, 30)
			expectChain(t, c, live, seqs[29], false)
		})
	}
}

// TestSnapshotIsLatestValid: payloads the gateway refuses after a valid
// one never become a snapshot, whether the viewer is alone (a cold room:
// the snapshot is read from the stream, stepping back over the refused
// ones) or joins a room someone already watches.
func TestSnapshotIsLatestValid(t *testing.T) {
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	g := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	for _, alone := range []bool{true, false} {
		room := fmt.Sprintf("valid-%v", alone)
		received := metric(t, g, "roomcast_updates_received_total")
		if !alone {
			roomtest.Dial(t, g).Join(room)
			roomtest.WaitSubscriptions(t, ns, "roomcast.live."+room, 1)
		}
		good := publish(t, nc, room, `{"n":1}`)
		publish(t, nc, room, `[1,2,3]`)
		publish(t, nc, room, `not json`)
		publish(t, nc, room, `"a string"`)
		if !alone {
			// The watcher's gateway has processed all four.
			roomtest.Eventually(t, 5*time.Second, func() error {
				if n := metric(t, g, "roomcast_updates_received_total") - received; n < 4 {
					return fmt.Errorf("%v updates received", n)
				}
				return nil
			})
		}
		c := roomtest.Dial(t, g)
		c.Join(room)
		if m := c.Expect("update"); m.Seq != good {
			t.Fatalf("alone=%v: snapshot seq %d, want %d (the last valid one)", alone, m.Seq, good)
		}
		next := publish(t, nc, room, `{"n":2}`)
		if m := c.Expect("update"); m.Seq != next || m.Prev == nil || *m.Prev != good {
			t.Fatalf("alone=%v: next update %+v, want seq %d prev %d", alone, m, next, good)
		}
	}
}

// TestResumeToStalledClient: a client resumes 100 updates back (6 MB:
// the room's memory holds a sixth, the rest comes from the stream) and
// never reads. Its replay is paged, so the gateway holds a page for it,
// not the backlog; it is closed within write_timeout of its writes
// stalling, like any stuck client, and the room's other client is served
// throughout.
func TestResumeToStalledClient(t *testing.T) {
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	cfg := roomtest.Config(t, ns.ClientURL())
	// Long enough that the watcher, taking 6 MB at full speed on a
	// loaded machine, is not cut off itself (it was, once, in CI under
	// -race at 1 s); the resumer's close is measured against it.
	cfg.WriteTimeout = 3 * time.Second
	cfg.PingInterval = time.Minute // the heartbeat must not be what ends it
	cfg.PongTimeout = 30 * time.Second
	g := roomtest.StartGateway(t, cfg)
	const room = "stalled"
	watcher := roomtest.Dial(t, g)
	watcher.Join(room)
	roomtest.WaitSubscriptions(t, ns, "roomcast.live."+room, 1)

	raw := make([]byte, 45<<10)
	_, _ = crand.Read(raw)
	pad := base64.StdEncoding.EncodeToString(raw) // 60 KiB
	first := publish(t, nc, room, `{"n":0}`)
	var last uint64
	for i := 1; i <= 100; i++ {
		last = publish(t, nc, room, fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	for m := watcher.Expect("update"); m.Seq != last; m = watcher.Expect("update") {
		// large updates at full speed: the watcher may be conflated
	}

	// A tiny receive buffer, and never a read after the handshake.
	d := websocket.Dialer{NetDial: sockettest.DialSmallRcvBuf}
	conn, _, err := d.Dial("ws://"+g.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if err := conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"op":"join","room":%q,"since":%d}`, room, first)); err != nil {
		t.Fatal(err)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Members(room); n != 2 {
			return fmt.Errorf("%d clients in the room", n)
		}
		return nil
	})
	// While it is stuck, the watcher is served.
	live := publish(t, nc, room, `{"n":101}`)
	if m := watcher.Expect("update"); m.Seq != live {
		t.Fatalf("watcher got seq %d, want %d", m.Seq, live)
	}
	// Closed: the room is back to the watcher alone. The replay's first
	// writes fill the socket buffers at once, so write_timeout plus a
	// margin for the loaded machine bounds it from the join.
	roomtest.Eventually(t, cfg.WriteTimeout+10*time.Second, func() error {
		if n := g.Hub().Members(room); n != 1 {
			return fmt.Errorf("%d clients in the room", n)
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("stalled resumer gone %v after its join (write_timeout %v)", took.Round(time.Millisecond), cfg.WriteTimeout)
	if took > cfg.WriteTimeout+3*time.Second && !roomtest.Race {
		t.Errorf("the stalled resumer was closed %v after its join; write_timeout is %v", took, cfg.WriteTimeout)
	}
	if q := metric(t, g, "roomcast_queued_bytes"); q > 2<<20 {
		t.Errorf("%.0f bytes still queued", q)
	}
}
