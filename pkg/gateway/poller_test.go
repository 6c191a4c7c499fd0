package gateway_test

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
)

// TestPollerDescriptorReuse: connections opened and closed in a tight loop,
// by the client and by the gateway, while their commands are still being
// read and updates written, so that descriptor numbers are reused while
// events for their previous owners are in flight. Under -race: no second
// reader of a connection (the race detector would see two readers on one
// frame parser), no panic, no poller error, and everything is released.
func TestPollerDescriptorReuse(t *testing.T) {
	for _, writer := range []string{"goroutine", "loop"} {
		t.Run(writer, func(t *testing.T) {
			testPollerDescriptorReuse(t, writer)
		})
	}
}

func testPollerDescriptorReuse(t *testing.T, writer string) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux-only")
	}
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.Queue.Writer = writer
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)
	baseline := roomtest.Goroutines()

	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Add(1)
	go func() { // updates keep the writers busy while connections churn
		defer pub.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = nc.Publish(salesSubject, []byte(`{"v":1}`))
			}
		}
	}()

	const workers, perWorker = 8, 150
	deadline := time.Now().Add(4 * time.Second) // bounds the test on a loaded machine
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var opened [workers]int
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker && time.Now().Before(deadline); i++ {
				if err := shortLived(g.Addr().String(), w+i); err != nil {
					errs <- err
					return
				}
				opened[w]++
			}
		}()
	}
	wg.Wait()
	close(stop)
	pub.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, n := range opened {
		total += n
	}
	t.Logf("%d connections opened and closed", total)

	// A connection the clients have finished with may still be between
	// accept and its session (not yet in roomcast_connections) and join
	// after the gauge read 0: wait for all three to settle together.
	roomtest.Eventually(t, 15*time.Second, func() error {
		if n := metric(t, g, "roomcast_tcp_connections"); n != 0 {
			return fmt.Errorf("%v TCP connections open", n)
		}
		if n := metric(t, g, "roomcast_connections"); n != 0 {
			return fmt.Errorf("%v connections open", n)
		}
		if n := g.Hub().Rooms(); n != 0 {
			return fmt.Errorf("hub still has %d rooms", n)
		}
		return nil
	})
	if n := metric(t, g, "roomcast_poller_errors_total"); n != 0 {
		t.Fatalf("roomcast_poller_errors_total = %v, want 0", n)
	}
	roomtest.WaitGoroutines(t, baseline)
}

// shortLived opens a connection, sends a burst of frames without waiting
// for answers and ends it in one of four ways, two of them the client's
// (vanish, close frame) and two the gateway's (a binary frame, a frame
// over max_frame_bytes), each with frames still following.
func shortLived(addr string, i int) error {
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	send := func(typ int, p string) { _ = conn.WriteMessage(typ, []byte(p)) }
	send(websocket.TextMessage, `{"op":"join","room":"sales"}`)
	_ = conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
	switch i % 4 {
	case 0:
		// vanish at once: the join may still be unread
	case 1:
		send(websocket.TextMessage, `{"op":"leave","room":"sales"}`)
		send(websocket.CloseMessage, string(websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")))
	case 2:
		send(websocket.BinaryMessage, "x")
		send(websocket.TextMessage, `{"op":"join","room":"sales"}`)
	case 3:
		send(websocket.TextMessage, fmt.Sprintf(`{"op":"join","room":"%05000d"}`, i))
		send(websocket.TextMessage, `{"op":"leave","room":"sales"}`)
	}
	return conn.NetConn().Close()
}
