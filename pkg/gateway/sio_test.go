package gateway_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/internal/sockettest"
)

// TestSocketIOSlowClient: a Socket.IO client over WebSocket that stops
// reading, in more rooms than its queue holds, is closed with 4008 when
// its outbox overflows (counted in roomcast_slow_disconnects_total), and
// leaves its rooms; the reading path (the poller) and the on-demand
// writer do not change that.
func TestSocketIOSlowClient(t *testing.T) {
	t.Parallel()
	const rooms = 12
	cfg := roomtest.Config(t, "")
	cfg.Queue.ConflateAfter, cfg.Queue.MaxMessages = 4, 8
	// Short, so that the writer blocked on the full socket gives up soon
	// after the 4008 (engineio does not cut it short as /ws does).
	cfg.WriteTimeout = 3 * time.Second
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, g.Embedded())

	d := websocket.Dialer{NetDial: sockettest.DialSmallRcvBuf}
	ws, _, err := d.Dial("ws://"+g.Addr().String()+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	read := func() string {
		t.Helper()
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	send := func(m string) {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if open := read(); !strings.HasPrefix(open, "0{") {
		t.Fatalf("open packet %q", open)
	}
	send("40")
	if got := read(); !strings.HasPrefix(got, "40{") {
		t.Fatalf("CONNECT answer %q", got)
	}
	for i := range rooms {
		send(fmt.Sprintf(`42%d["join",{"room":"r%d"}]`, i+1, i))
	}
	for acks := 0; acks < rooms; {
		if m := read(); strings.HasPrefix(m, "43") {
			acks++
		}
	}

	// The client reads no more. 32 KiB updates to every room soon fill the
	// socket buffers; then the outbox holds one per room (conflated),
	// more than max_messages.
	before := metric(t, g, "roomcast_slow_disconnects_total")
	pad := strings.Repeat("x", 32<<10)
	roomtest.Eventually(t, 20*time.Second, func() error {
		for i := range rooms {
			_ = nc.Publish(fmt.Sprintf("roomcast.room.r%d", i), []byte(fmt.Sprintf(`{"pad":%q}`, pad)))
		}
		_ = nc.Flush()
		if metric(t, g, "roomcast_slow_disconnects_total") == before {
			return fmt.Errorf("not closed as too slow yet")
		}
		return nil
	})
	roomtest.Eventually(t, 10*time.Second, func() error {
		for i := range rooms {
			if n := g.Hub().Members(fmt.Sprintf("r%d", i)); n != 0 {
				return fmt.Errorf("room r%d still has %d members", i, n)
			}
		}
		return nil
	})
}
