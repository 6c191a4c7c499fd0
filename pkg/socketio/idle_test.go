package socketio_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/gateway"
)

// TestIdleSessionsHoldNoGoroutine: Socket.IO clients over WebSocket,
// connected and in a room, cost the gateway no goroutine while idle
// (reading is the /ws poller's, pings are timers, the writer runs only
// while sending); they still get the room's updates and their pings; and
// after they close and the gateway stops the count is back at the
// baseline.
func TestIdleSessionsHoldNoGoroutine(t *testing.T) {
	const n = 100
	base := roomtest.Goroutines()
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.SocketIO.PingInterval = 300 * time.Millisecond
	g, err := gateway.Start(cfg, gateway.Options{Log: roomtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	roomtest.Eventually(t, 10*time.Second, func() error {
		if ok, why := g.Ready(); !ok {
			return fmt.Errorf("%s", why)
		}
		return nil
	})
	// One client joins first, so that the room's subscription (and its
	// goroutines, if any) are part of the reference count.
	first := connect(t, g, "")
	first.send(`21["join",{"room":"sales"}]`)
	if got := first.nextOther(); got != `31[{"ok":true}]` {
		t.Fatalf("join ack %q", got)
	}
	settleAt := func(want int, what string) {
		t.Helper()
		roomtest.Eventually(t, 10*time.Second, func() error {
			if got := runtime.NumGoroutine(); got > want {
				return fmt.Errorf("%s: %d goroutines, want at most %d", what, got, want)
			}
			return nil
		})
	}
	time.Sleep(100 * time.Millisecond) // let the first join's writer finish before counting
	ref := runtime.NumGoroutine()

	clients := make([]*client, n)
	for i := range clients {
		c := connect(t, g, "")
		c.send(`22["join",{"room":"sales"}]`)
		if got := c.nextOther(); got != `32[{"ok":true}]` {
			t.Fatalf("client %d: join ack %q", i, got)
		}
		clients[i] = c
	}
	// The clients are in this process and hold no goroutine either; allow
	// a few for writers finishing and the runtime.
	settleAt(ref+5, fmt.Sprintf("%d idle Socket.IO sessions", n))
	t.Logf("goroutines: %d with one session, %d with %d more idle", ref, runtime.NumGoroutine(), n)

	// Idle, they are served: updates reach every one, and pings come
	// (client.next answers them) across several intervals.
	nc := roomtest.Connect(t, ns)
	for i := range 4 {
		if err := nc.Publish("roomcast.room.sales", fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
		for j, c := range clients {
			if got := c.next(); !strings.HasPrefix(got, `2["update_data",`) {
				t.Fatalf("client %d: %q, want update_data", j, got)
			}
		}
		time.Sleep(150 * time.Millisecond) // spread over two ping intervals
	}
	nc.Close()
	settleAt(ref+5, fmt.Sprintf("%d Socket.IO sessions idle again", n))

	for _, c := range clients {
		c.ws.Close()
	}
	first.ws.Close()
	stop()
	ns.Shutdown()
	ns.WaitForShutdown()
	roomtest.WaitGoroutines(t, base)
}
