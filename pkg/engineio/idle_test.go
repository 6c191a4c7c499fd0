package engineio_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/engineio"
	"github.com/roomcast/roomcast/pkg/wsread"
)

type errCount struct{ n atomic.Int64 }

func (c *errCount) Inc() { c.n.Add(1) }

// withPoller gives the server an epoll poller, closed after the server's
// shutdown (cleanups run last-registered first, and start registers its
// own after the edit). Without epoll the test is skipped.
func withPoller(t *testing.T) func(*engineio.Config) {
	return func(c *engineio.Config) {
		p, err := wsread.NewPoller(slog.New(slog.DiscardHandler), new(errCount))
		if err != nil {
			t.Skip("no poller on this system:", err)
		}
		t.Cleanup(p.Close)
		c.Poller = p
	}
}

// TestWebSocketWithPoller runs the WebSocket tests with the socket read by
// the poller instead of a reader goroutine.
func TestWebSocketWithPoller(t *testing.T) {
	t.Parallel()
	t.Run("echo and errors", func(t *testing.T) { webSocketErrors(t, withPoller(t)) })
	t.Run("upgrade", func(t *testing.T) { upgrade(t, withPoller(t)) })
	t.Run("close status", func(t *testing.T) { closeStatus(t, withPoller(t)) })
}

// settle waits until the process's goroutines stay at most want for a
// moment (a writer that has just sent may still be returning).
func settle(t *testing.T, want int, what string) {
	t.Helper()
	roomtest.Eventually(t, 10*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > want {
			return fmt.Errorf("%s: %d goroutines, want at most %d", what, n, want)
		}
		return nil
	})
}

// TestIdleWebSocketsHoldNoGoroutine: with a poller, open and idle
// WebSocket sessions cost no goroutine (no reader, no writer, no
// heartbeat, no HTTP handler), they still echo and get their pings, and
// after they close the count is back at the baseline.
func TestIdleWebSocketsHoldNoGoroutine(t *testing.T) {
	const n = 200
	p, err := wsread.NewPoller(slog.New(slog.DiscardHandler), new(errCount))
	if err != nil {
		t.Skip("no poller on this system:", err)
	}
	defer p.Close()
	base := roomtest.Goroutines()
	s := engineio.NewServer(engineio.Config{
		PingInterval: 300 * time.Millisecond, PingTimeout: 5 * time.Second, MaxPayload: 1000,
		Open: engineio.Echo, Poller: p,
	})
	ts := httptest.NewServer(s)
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/engine.io/?EIO=4&transport=websocket"
	withServer := roomtest.Goroutines() // the test server's accept loop
	clients := make([]*websocket.Conn, n)
	for i := range clients {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = ws
		if open := read(t, ws); !strings.HasPrefix(open, "0{") {
			t.Fatalf("open packet %q", open)
		}
	}
	// A few goroutines of slack: a reader or writer that is finishing, the
	// runtime's own.
	settle(t, withServer+5, fmt.Sprintf("%d idle sessions", n))
	if got := s.Len(); got != n {
		t.Fatalf("%d sessions open, want %d", got, n)
	}

	// Idle sessions still work: an echo, and the pings (timers) come and
	// are answered, on every session, across several intervals.
	for round := range 3 {
		for i, ws := range clients {
			if got := read(t, ws); got != "2" {
				t.Fatalf("round %d, client %d: %q, want a ping", round, i, got)
			}
			if err := ws.WriteMessage(websocket.TextMessage, []byte("3")); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = clients[0].WriteMessage(websocket.TextMessage, []byte("4hello"))
	for {
		got := read(t, clients[0])
		if got == "4hello" {
			break
		}
		if got != "2" {
			t.Fatalf("echo: %q", got)
		}
	}
	settle(t, withServer+5, "after pings and an echo")
	if got := s.Len(); got != n {
		t.Fatalf("%d sessions open after the pings, want %d", got, n)
	}

	for _, ws := range clients {
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		ws.Close()
	}
	roomtest.Eventually(t, 10*time.Second, func() error {
		if s.Len() != 0 {
			return errors.New("sessions still open")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx, 1012, "test over"); err != nil {
		t.Fatal(err)
	}
	ts.Close()
	roomtest.WaitGoroutines(t, base)
}

// TestWebSocketPingTimeout: with the heartbeat a timer, a WebSocket client
// that stops answering pings is closed after PingTimeout, and one that
// answers stays.
func TestWebSocketPingTimeout(t *testing.T) {
	t.Parallel()
	conns := make(chan *engineio.Conn, 2)
	s, base := start(t, func(c *engineio.Config) {
		withPoller(t)(c)
		c.PingInterval, c.PingTimeout = 50*time.Millisecond, 100*time.Millisecond
		c.Open = func(conn *engineio.Conn) engineio.Handler {
			conns <- conn
			return engineio.Echo(conn)
		}
	})
	answering, silent := dialWS(t, base, ""), dialWS(t, base, "")
	read(t, answering)
	read(t, silent)
	<-conns
	<-conns
	// The answering client answers every ping until the test ends.
	pings := make(chan int, 1)
	go func() {
		n := 0
		for {
			_, b, err := answering.ReadMessage()
			if err != nil {
				pings <- n
				return
			}
			if string(b) == "2" {
				n++
				_ = answering.WriteMessage(websocket.TextMessage, []byte("3"))
			}
		}
	}()
	begin := time.Now()
	if got := read(t, silent); got != "2" {
		t.Fatalf("%q, want a ping", got)
	}
	if code := closeCode(silent); code != websocket.CloseNormalClosure {
		t.Fatalf("silent client: close code %d, want 1000", code)
	}
	if d := time.Since(begin); d < 90*time.Millisecond {
		t.Fatalf("closed %v after the ping, before the pong timeout", d)
	}
	// Three more intervals: the answering one stays.
	deadline := time.Now().Add(200 * time.Millisecond)
	roomtest.Eventually(t, 5*time.Second, func() error {
		if s.Len() != 1 {
			return fmt.Errorf("%d sessions, want the answering one", s.Len())
		}
		if time.Now().Before(deadline) {
			return errors.New("still watching")
		}
		return nil
	})
	answering.Close()
	if n := <-pings; n < 3 {
		t.Fatalf("the answering client got %d pings, want at least 3", n)
	}
}

// TestPollingSessionsHoldNoGoroutine: between polls a long-polling
// session holds no goroutine (the heartbeat is a timer); its pings wait
// in its queue for the next poll.
func TestPollingSessionsHoldNoGoroutine(t *testing.T) {
	const n = 100
	base := roomtest.Goroutines()
	s := engineio.NewServer(engineio.Config{
		PingInterval: 50 * time.Millisecond, PingTimeout: 5 * time.Second, MaxPayload: 1000,
		Open: engineio.Echo,
	})
	ts := httptest.NewServer(s)
	url := ts.URL + "/engine.io/?EIO=4"
	// The client's keep-alive connection to the test server: two
	// goroutines here, one there.
	handshake(t, url)
	withServer := roomtest.Goroutines()
	sids := make([]string, n)
	for i := range sids {
		sids[i] = handshake(t, url)
	}
	time.Sleep(100 * time.Millisecond) // past a ping interval: every session has queued a ping
	settle(t, withServer+5, fmt.Sprintf("%d polling sessions between polls", n))
	for _, sid := range sids[:10] {
		if status, body := do(t, "GET", url+"&transport=polling&sid="+sid, "", nil); status != 200 || body != "2" {
			t.Fatalf("poll: %d %q, want the ping", status, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx, 1012, "test over"); err != nil {
		t.Fatal(err)
	}
	ts.Close()
	http.DefaultClient.CloseIdleConnections()
	roomtest.WaitGoroutines(t, base)
}

// TestHandshakeErrors: the WebSocket handshake refuses what gorilla's
// Upgrader refused, with Engine.IO's 400 body.
func TestHandshakeErrors(t *testing.T) {
	t.Parallel()
	_, base := start(t, nil)
	url := base + "&transport=websocket"
	ok := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	tests := []struct {
		name   string
		edit   func(http.Header)
		status int
	}{
		{"version 12", func(h http.Header) { h.Set("Sec-Websocket-Version", "12") }, 400},
		{"no key", func(h http.Header) { h.Del("Sec-Websocket-Key") }, 400},
		{"short key", func(h http.Header) { h.Set("Sec-Websocket-Key", "c2hvcnQ=") }, 400},
		{"no upgrade token", func(h http.Header) { h.Set("Connection", "keep-alive") }, 400},
	}
	for _, tt := range tests {
		h := ok.Clone()
		tt.edit(h)
		if status, body := do(t, "GET", url, "", h); status != tt.status || !strings.Contains(body, `"code":3`) {
			t.Errorf("%s: %d %q, want %d with code 3", tt.name, status, body, tt.status)
		}
	}
}
