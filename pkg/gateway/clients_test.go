package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/internal/sockettest"
)

// TestBadClientInput sends each kind of bad frame on its own connection and
// checks the reply or close code; afterwards another client still gets its
// updates and no room subscription was taken for a bad room.
func TestBadClientInput(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.Limits.MaxRoomsPerConnection = 3
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)
	witness := roomtest.Dial(t, g)
	witness.Join("sales")

	type want struct {
		code  string // error code of the reply, or
		close int    // the close code
	}
	text := func(s string) func(*roomtest.Client) {
		return func(c *roomtest.Client) { c.Send(s) }
	}
	tests := []struct {
		name string
		send func(*roomtest.Client)
		want want
	}{
		{"malformed JSON", text(`{"op":"join","room":`), want{code: "bad_json"}},
		{"not an object", text(`["join","sales"]`), want{code: "bad_json"}},
		{"unknown op", text(`{"op":"publish","room":"sales"}`), want{code: "bad_op"}},
		{"missing op", text(`{"room":"sales"}`), want{code: "bad_op"}},
		{"missing room", text(`{"op":"join"}`), want{code: "bad_room"}},
		{"room >", text(`{"op":"join","room":">"}`), want{code: "bad_room"}},
		{"room *", text(`{"op":"join","room":"*"}`), want{code: "bad_room"}},
		{"room a.b", text(`{"op":"join","room":"a.b"}`), want{code: "bad_room"}},
		{"empty room", text(`{"op":"join","room":""}`), want{code: "bad_room"}},
		{"65 characters", text(`{"op":"join","room":"` + strings.Repeat("r", 65) + `"}`), want{code: "bad_room"}},
		{"non-ASCII room", text(`{"op":"join","room":"销售"}`), want{code: "bad_room"}},
		{"id not an integer", text(`{"op":"join","room":"sales","id":"x"}`), want{code: "bad_json"}},
		{"too many rooms", func(c *roomtest.Client) {
			for _, r := range []string{"a", "b", "c"} {
				c.Join(r)
			}
			c.Send(`{"op":"join","room":"d"}`)
		}, want{code: "too_many_rooms"}},
		{"binary frame", func(c *roomtest.Client) {
			_ = c.Conn.WriteMessage(websocket.BinaryMessage, []byte(`{"op":"join","room":"sales"}`))
		}, want{close: 1003}},
		{"invalid UTF-8", text("{\"op\":\"join\",\"room\":\"\xff\"}"), want{close: 1007}},
		{"frame over the read limit", text(`{"op":"join","room":"sales","pad":"` + strings.Repeat("x", 5000) + `"}`), want{close: 1009}},
		{"10,000 commands in a burst", func(c *roomtest.Client) {
			for i := 0; i < 10000; i++ {
				_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := c.Conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"join","room":"burst"}`)); err != nil {
					return // the gateway closed the connection
				}
			}
		}, want{close: 1008}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := roomtest.Dial(t, g)
			tt.send(c)
			if tt.want.close != 0 {
				if code := c.ExpectClose(5 * time.Second); code != tt.want.close {
					t.Fatalf("close code %d, want %d", code, tt.want.close)
				}
			} else {
				m := c.Expect("error")
				if m.Code != tt.want.code || m.Message == "" {
					t.Fatalf("reply %+v, want code %s", m, tt.want.code)
				}
				// The connection is still usable.
				c.Join("a")
			}
			if n := roomtest.SubscriptionsUnder(ns, "roomcast.live.") - roomtest.Subscriptions(ns, salesLive); n > 3 {
				t.Fatalf("%d unexpected room subscriptions", n)
			}
			publishAndExpect(t, nc, witness, tt.name)
		})
	}
	// Bad rooms never reached NATS: the only room subjects ever subscribed
	// are valid rooms.
	sz, _ := ns.Subsz(&server.SubszOptions{Subscriptions: true, Limit: 1 << 20})
	for _, s := range sz.Subs {
		if strings.HasPrefix(s.Subject, "roomcast.live.") && strings.ContainsAny(strings.TrimPrefix(s.Subject, "roomcast.live."), ".*> ") {
			t.Errorf("bad room reached NATS: %s", s.Subject)
		}
	}
	if got := metric(t, g, "roomcast_client_errors_total"); got < 13 {
		t.Errorf("roomcast_client_errors_total = %v", got)
	}
}

// TestResumeWithoutHistory: a gateway without history refuses since with
// a clear error code and still serves a plain join.
func TestResumeWithoutHistory(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.History.Enabled = false
	g := roomtest.StartGateway(t, cfg)
	c := roomtest.Dial(t, g)
	c.Send(`{"op":"join","room":"sales","since":3,"id":4}`)
	if m := c.Expect("error"); m.Code != "history_unavailable" || m.ID == nil || *m.ID != 4 || m.Room != "sales" {
		t.Fatalf("reply %+v", m)
	}
	c.Join("sales")
	nc := roomtest.Connect(t, g.Embedded())
	roomtest.WaitSubscriptions(t, g.Embedded(), salesSubject, 1)
	publishAndExpect(t, nc, c, "no history")
}

// publishAndExpect publishes a marked update to sales and waits until c
// gets it.
func publishAndExpect(t testing.TB, nc interface {
	Publish(string, []byte) error
}, c *roomtest.Client, mark string) {
	t.Helper()
	data := fmt.Sprintf(`{"mark":%q}`, mark)
	if err := nc.Publish(salesSubject, []byte(data)); err != nil {
		t.Fatal(err)
	}
	m := c.Expect("update")
	if string(m.Data) != data {
		t.Fatalf("witness got %s, want %s", m.Data, data)
	}
}

// TestBadProducerPayloads checks that payloads that are not one JSON object
// (or are too large) are dropped and counted, never forwarded.
func TestBadProducerPayloads(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.Limits.MaxUpdateBytes = 1024
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)
	c := roomtest.Dial(t, g)
	c.Join("sales")
	roomtest.WaitSubscriptions(t, ns, salesLive, 1)

	bad := []string{
		`[1,2,3]`, `42`, `"sales"`, `null`, ``, `not json`, `{"sales":`, `{"a":1}{"b":2}`,
		"{\"a\":\"\xff\"}", `{"big":"` + strings.Repeat("x", 2000) + `"}`,
	}
	for _, p := range bad {
		if err := nc.Publish(salesSubject, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	publishAndExpect(t, nc, c, "after the bad ones")
	if got := metric(t, g, "roomcast_updates_dropped_total"); got != float64(len(bad)) {
		t.Fatalf("roomcast_updates_dropped_total = %v, want %d", got, len(bad))
	}
}

// TestSlowClient: a client that stops reading neither delays another client
// of the same room nor makes the gateway hold more than the queue bound.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	for _, writer := range writers {
		t.Run(writer, func(t *testing.T) {
			t.Parallel()
			testSlowClient(t, writer)
		})
	}
}

func testSlowClient(t *testing.T, writer string) {
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	useWriter(&cfg, writer)
	// The slow client never reads, so its writer blocks; this test is about
	// conflation, so keep write_timeout from ending it on a loaded machine
	// (seen: 21 s for the 400 updates while other builds ran).
	cfg.WriteTimeout = 5 * time.Minute
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)

	slow := dialSmallBuffer(t, g.Addr().String())
	if err := slow.WriteMessage(websocket.TextMessage, []byte(`{"op":"join","room":"sales"}`)); err != nil {
		t.Fatal(err)
	}
	fast := roomtest.Dial(t, g)
	fast.Join("sales")
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Members("sales"); n != 2 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})

	// 400 updates of 32 KiB (12.5 MiB) are far more than the socket
	// buffers on both sides of the slow client hold.
	const updates = 400
	pad := strings.Repeat("x", 32<<10)
	var maxQueued float64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < updates; i++ {
			_ = nc.Publish(salesSubject, []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)))
			if i%50 == 0 {
				_ = nc.Flush()
			}
		}
	}()
	last := -1
	for last < updates-1 {
		m := fast.Expect("update")
		var n int
		fmt.Sscanf(string(m.Data), `{"n":%d`, &n)
		if n <= last {
			t.Fatalf("fast client: update %d after %d", n, last)
		}
		last = n
		maxQueued = max(maxQueued, metric(t, g, "roomcast_queued_bytes_max"))
	}
	wg.Wait()
	if maxQueued > float64(cfg.Queue.MaxBytes) {
		t.Fatalf("a queue held %v bytes, bound %d", maxQueued, cfg.Queue.MaxBytes)
	}
	if metric(t, g, "roomcast_conflated_total") == 0 {
		t.Fatal("the slow client's updates were never conflated")
	}
	// The slow client is still connected: conflation kept it within bounds.
	if n := g.Hub().Members("sales"); n != 2 {
		t.Fatalf("%d members, want 2", n)
	}
}

// TestTooSlowClientIsDisconnected: when conflation cannot keep a client's
// queue within bounds (many rooms), the client is disconnected and its
// queue freed.
func TestTooSlowClientIsDisconnected(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.Queue.MaxBytes = 256 << 10
	cfg.Limits.MaxUpdateBytes = 64 << 10
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)

	slow := dialSmallBuffer(t, g.Addr().String())
	const rooms = 20
	for r := range rooms {
		if err := slow.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"op":"join","room":"r%d"}`, r))); err != nil {
			t.Fatal(err)
		}
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Rooms(); n != rooms {
			return fmt.Errorf("%d rooms", n)
		}
		return nil
	})
	pad := strings.Repeat("y", 60<<10)
	for i := 0; i < 400 && metric(t, g, "roomcast_slow_disconnects_total") == 0; i++ {
		_ = nc.Publish(fmt.Sprintf("roomcast.room.r%d", i%rooms), []byte(fmt.Sprintf(`{"pad":%q}`, pad)))
		_ = nc.Flush()
	}
	roomtest.Eventually(t, 10*time.Second, func() error {
		if n := metric(t, g, "roomcast_slow_disconnects_total"); n != 1 {
			return fmt.Errorf("slow disconnects %v", n)
		}
		if n := metric(t, g, "roomcast_connections"); n != 0 {
			return fmt.Errorf("%v connections", n)
		}
		return nil
	})
	if n := g.Hub().Rooms(); n != 0 {
		t.Fatalf("%d rooms left", n)
	}
}

// dialSmallBuffer opens a WebSocket whose socket receive buffer is tiny,
// and never reads from it.
func dialSmallBuffer(t *testing.T, addr string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDial: sockettest.DialSmallRcvBuf}
	conn, _, err := d.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	// Short, but with room for a loaded CI machine to answer in time.
	cfg.PingInterval = 200 * time.Millisecond
	cfg.PongTimeout = time.Second
	g := roomtest.StartGateway(t, cfg)

	// A client that reads answers pings (gorilla does it inside reads).
	alive := roomtest.Dial(t, g)
	alive.Join("sales")
	pings := make(chan struct{}, 100)
	alive.Conn.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return alive.Conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	aliveErr := make(chan error, 1)
	go func() {
		_ = alive.Conn.SetReadDeadline(time.Time{})
		_, _, err := alive.Conn.ReadMessage()
		aliveErr <- err
	}()

	// A client that never reads never answers: it is closed.
	roomtest.Dial(t, g)
	roomtest.Eventually(t, 10*time.Second, func() error {
		if n := metric(t, g, "roomcast_connections"); n != 1 {
			return fmt.Errorf("%v connections, want 1", n)
		}
		return nil
	})
	// Meanwhile the reading client has answered several pings and is still
	// connected.
	for range 5 {
		select {
		case <-pings:
		case err := <-aliveErr:
			t.Fatalf("reading client disconnected: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("no ping")
		}
	}
	select {
	case err := <-aliveErr:
		t.Fatalf("reading client disconnected: %v", err)
	default:
	}
}

// TestNATSRestart: the gateway reconnects to a restarted NATS server and
// restores its room subscriptions, and clients get updates again.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	port, store := roomtest.FreePort(t), t.TempDir()
	opts := func() *server.Options { return &server.Options{Port: port, JetStream: true, StoreDir: store} }
	ns := roomtest.StartNATSWith(t, opts())
	g := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	c := roomtest.Dial(t, g)
	c.Join("sales")
	roomtest.WaitSubscriptions(t, ns, salesLive, 1)

	ns.Shutdown()
	ns.WaitForShutdown()
	roomtest.Eventually(t, 5*time.Second, func() error {
		if ok, _ := g.Ready(); ok {
			return fmt.Errorf("still ready with NATS down")
		}
		return nil
	})
	ns2 := roomtest.StartNATSWith(t, opts())
	roomtest.WaitSubscriptions(t, ns2, salesLive, 1)
	roomtest.Eventually(t, 10*time.Second, func() error {
		if ok, why := g.Ready(); !ok {
			return fmt.Errorf("not ready: %s", why)
		}
		return nil
	})
	publishAndExpect(t, roomtest.Connect(t, ns2), c, "after restart")
}

// TestBatching: messages that queue up while the writer is busy go out in
// one frame, "\n"-separated.
func TestBatching(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	g := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	nc := roomtest.Connect(t, ns)
	c := roomtest.Dial(t, g)
	c.Join("sales")
	roomtest.WaitSubscriptions(t, ns, salesLive, 1)
	// Publish a burst in one NATS flush; the writer wakes once and finds
	// most of it queued. (Fewer than queue.conflate_after, so that no
	// update is conflated.)
	const n = 30
	for i := range n {
		_ = nc.Publish(salesSubject, []byte(fmt.Sprintf(`{"n":%d}`, i)))
	}
	_ = nc.Flush()
	start := c.Frames
	for i := range n {
		m := c.Expect("update")
		if !bytes.Equal(m.Data, []byte(fmt.Sprintf(`{"n":%d}`, i))) {
			t.Fatalf("update %d: %s", i, m.Data)
		}
	}
	if frames := c.Frames - start; frames >= n {
		t.Fatalf("%d updates came in %d frames: no batching", n, frames)
	}
}

// TestSlowReaderCatchesUp: a client stops reading for 10 seconds while
// three rooms update at 20 Hz. Another client's latency stays where it
// was, the slow client's queue stays within its bound (conflation), and
// when it reads again it gets the latest update of every room.
func TestSlowReaderCatchesUp(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("10 s test")
	}
	cfg := roomtest.Config(t, "")
	// Room for two seconds of backlog before conflation, so that a reader
	// slowed by a loaded machine is not mistaken for a slow client.
	cfg.Queue.ConflateAfter, cfg.Queue.MaxMessages, cfg.Queue.MaxBytes = 1000, 2000, 4<<20
	// The pause is 10 s: a write_timeout of 10 s would race it.
	cfg.WriteTimeout = time.Minute
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, g.Embedded())
	rooms := []string{"a", "b", "c"}

	slow := dialSmallBuffer(t, g.Addr().String())
	fast := roomtest.Dial(t, g)
	for _, r := range rooms {
		_ = slow.WriteMessage(websocket.TextMessage, []byte(`{"op":"join","room":"`+r+`"}`))
		fast.Join(r)
	}
	roomtest.WaitSubscriptions(t, g.Embedded(), "roomcast.live.c", 1)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // 20 Hz per room, 16 KiB each: more than the socket buffers hold in 10 s
		defer wg.Done()
		pad := strings.Repeat("p", 16<<10)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for _, r := range rooms {
					_ = nc.Publish("roomcast.room."+r, []byte(fmt.Sprintf(`{"ts":%d,"pad":%q}`, time.Now().UnixNano(), pad)))
				}
			}
		}
	}()

	// The queue gauge is sampled on the side: gathering metrics for every
	// update would make this test's reader, not the gateway, the bottleneck.
	var maxQueued atomic.Uint64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if q := uint64(metric(t, g, "roomcast_queued_bytes_max")); q > maxQueued.Load() {
					maxQueued.Store(q)
				}
			}
		}
	}()

	// The fast client reads throughout. It must get every update: a prev
	// chain without a hole means it was never conflated, so the client that
	// does not read never held it up. Latency (receive time - ts) is
	// logged, not asserted: this machine is shared.
	var lat []time.Duration
	want := map[string]uint64{} // the fast client's last seq per room: the latest
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m := fast.Expect("update")
		if last := want[m.Room]; last != 0 && (m.Prev == nil || *m.Prev != last) {
			t.Fatalf("fast client missed updates of %s: seq %d prev %v after %d", m.Room, m.Seq, m.Prev, last)
		}
		want[m.Room] = m.Seq
		var d struct{ Ts int64 }
		_ = json.Unmarshal(m.Data, &d)
		lat = append(lat, time.Since(time.Unix(0, d.Ts)))
	}
	close(stop)
	wg.Wait()
	<-sampled
	_ = nc.Flush()

	early, late := median(lat[:len(lat)/5]), median(lat[len(lat)*4/5:])
	t.Logf("fast client latency: median %v in the first 2 s, %v in the last 2 s; slow client's queue peaked at %d bytes", early, late, maxQueued.Load())
	if q := maxQueued.Load(); q > uint64(cfg.Queue.MaxBytes) {
		t.Errorf("a queue held %d bytes", q)
	}
	if metric(t, g, "roomcast_slow_disconnects_total") != 0 {
		t.Fatal("the slow client was disconnected; conflation should have kept it")
	}
	if metric(t, g, "roomcast_conflated_total") == 0 {
		t.Fatal("nothing was conflated: the slow client never fell behind")
	}

	for {
		m, err := fast.Next(time.Second)
		if err != nil {
			break
		}
		want[m.Room] = m.Seq
	}
	// Now the slow client reads again and ends on the latest of each room.
	got := map[string]uint64{}
	_ = slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	for got["a"] != want["a"] || got["b"] != want["b"] || got["c"] != want["c"] {
		_, frame, err := slow.ReadMessage()
		if err != nil {
			t.Fatalf("slow client: %v (has %v, want %v)", err, got, want)
		}
		for _, line := range strings.Split(string(frame), "\n") {
			var m roomtest.Msg
			if json.Unmarshal([]byte(line), &m) == nil && m.Op == "update" {
				got[m.Room] = m.Seq
			}
		}
	}
}
