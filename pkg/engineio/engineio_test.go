package engineio_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/engineio"
)

// start serves an echo endpoint (every message comes back) at /engine.io/.
func start(t *testing.T, edit func(*engineio.Config)) (*engineio.Server, string) {
	t.Helper()
	cfg := engineio.Config{
		PingInterval: time.Minute, PingTimeout: time.Minute, MaxPayload: 1000,
		Open: engineio.Echo, Log: roomtest.Logger(t),
	}
	if edit != nil {
		edit(&cfg)
	}
	s := engineio.NewServer(cfg)
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx, 1012, "test over")
		ts.Close()
	})
	return s, ts.URL + "/engine.io/?EIO=4"
}

func do(t *testing.T, method, url, body string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// handshake opens a polling session and returns its sid.
func handshake(t *testing.T, base string) string {
	t.Helper()
	status, body := do(t, "GET", base+"&transport=polling", "", nil)
	if status != 200 || !strings.HasPrefix(body, "0") {
		t.Fatalf("handshake: %d %q", status, body)
	}
	var open struct{ SID string }
	if err := json.Unmarshal([]byte(body[1:]), &open); err != nil {
		t.Fatal(err)
	}
	return open.SID
}

// alive reports whether the session still takes packets.
func alive(t *testing.T, base, sid string) bool {
	status, _ := do(t, "POST", base+"&transport=polling&sid="+sid, "6", nil)
	return status == 200
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	_, base := start(t, nil)
	root := strings.TrimSuffix(base, "?EIO=4")
	tests := []struct {
		name, method, url string
		header            http.Header
		status, code      int
	}{
		{"no transport", "GET", base, nil, 400, 0},
		{"unknown transport", "GET", base + "&transport=flash", nil, 400, 0},
		{"no EIO", "GET", root + "?transport=polling", nil, 400, 5},
		{"EIO 3", "GET", root + "?EIO=3&transport=polling", nil, 400, 5},
		{"handshake by POST", "POST", base + "&transport=polling", nil, 400, 2},
		{"handshake by PUT", "PUT", base + "&transport=polling", nil, 400, 2},
		{"unknown sid, poll", "GET", base + "&transport=polling&sid=nope", nil, 400, 1},
		{"unknown sid, post", "POST", base + "&transport=polling&sid=nope", nil, 400, 1},
		{"unknown sid, websocket", "GET", base + "&transport=websocket&sid=nope", nil, 400, 1},
		{"websocket without upgrade", "GET", base + "&transport=websocket", nil, 400, 3},
		{"foreign origin", "GET", base + "&transport=polling", http.Header{"Origin": {"https://evil.example"}}, 403, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, tt.method, tt.url, "", tt.header)
			var e struct {
				Code    int
				Message string
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || status != tt.status || e.Code != tt.code || e.Message == "" {
				t.Fatalf("got %d %s, want %d with code %d", status, body, tt.status, tt.code)
			}
		})
	}
}

// TestPollingErrors: what closes a polling session, and what does not.
func TestPollingErrors(t *testing.T) {
	t.Parallel()
	_, base := start(t, nil)
	tests := []struct {
		name, body string
		status     int
		alive      bool
	}{
		{"message", "4hello", 200, true},
		{"several packets and binary", "4a\x1ebAQID\x1e3", 200, true},
		{"not a packet", "abc", 400, false},
		{"empty body", "", 400, false},
		{"unknown type", "9x", 400, false},
		{"trailing separator", "4a\x1e", 400, false},
		{"bad base64", "b!!!", 400, false},
		{"upgrade packet over polling", "5", 400, false},
		{"open packet from the client", "0", 400, false},
		{"oversized", "4" + strings.Repeat("x", 1000), 413, false},
		{"close", "1", 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sid := handshake(t, base)
			status, _ := do(t, "POST", base+"&transport=polling&sid="+sid, tt.body, nil)
			if status != tt.status {
				t.Fatalf("POST %q: %d, want %d", tt.body, status, tt.status)
			}
			if got := alive(t, base, sid); got != tt.alive {
				t.Fatalf("session alive %v, want %v", got, tt.alive)
			}
		})
	}
}

func TestPollingEcho(t *testing.T) {
	t.Parallel()
	_, base := start(t, nil)
	sid := handshake(t, base)
	url := base + "&transport=polling&sid=" + sid
	if status, body := do(t, "POST", url, "4hello\x1ebAQIDBA==", nil); status != 200 || body != "ok" {
		t.Fatalf("POST: %d %q", status, body)
	}
	if status, body := do(t, "GET", url, "", nil); status != 200 || body != "4hello\x1ebAQIDBA==" {
		t.Fatalf("poll: %d %q", status, body)
	}
}

// TestDuplicatePoll: a second GET while one waits closes the session; the
// waiting GET gets the close packet, the other a 400.
func TestDuplicatePoll(t *testing.T) {
	t.Parallel()
	s, base := start(t, nil)
	sid := handshake(t, base)
	url := base + "&transport=polling&sid=" + sid
	got := make(chan string, 2)
	for range 2 {
		go func() {
			resp, err := http.Get(url)
			if err != nil {
				got <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got <- fmt.Sprint(resp.StatusCode, " ", string(b))
		}()
	}
	a, b := <-got, <-got
	if a > b {
		a, b = b, a
	}
	if a != "200 1" || !strings.HasPrefix(b, "400 ") {
		t.Fatalf("polls got %q and %q, want the close packet and a 400", a, b)
	}
	if s.Len() != 0 {
		t.Fatal("session still open")
	}
}

func TestPingTimeout(t *testing.T) {
	t.Parallel()
	s, base := start(t, func(c *engineio.Config) {
		c.PingInterval, c.PingTimeout = 20*time.Millisecond, 20*time.Millisecond
	})
	sid := handshake(t, base)
	roomtest.Eventually(t, 5*time.Second, func() error {
		if s.Len() != 0 {
			return errors.New("session still open")
		}
		return nil
	})
	if status, _ := do(t, "GET", base+"&transport=polling&sid="+sid, "", nil); status != 400 {
		t.Fatalf("poll after the timeout: %d", status)
	}
}

func TestPingPong(t *testing.T) {
	t.Parallel()
	_, base := start(t, func(c *engineio.Config) {
		c.PingInterval, c.PingTimeout = 20*time.Millisecond, 5*time.Second
	})
	sid := handshake(t, base)
	url := base + "&transport=polling&sid=" + sid
	for range 3 {
		if status, body := do(t, "GET", url, "", nil); status != 200 || body != "2" {
			t.Fatalf("poll: %d %q, want a ping", status, body)
		}
		if status, _ := do(t, "POST", url, "3", nil); status != 200 {
			t.Fatalf("pong: %d", status)
		}
	}
}

// oneSlot admits one session at a time and counts releases.
type oneSlot struct {
	mu       sync.Mutex
	held     bool
	releases int
}

func (o *oneSlot) admit(*http.Request) (engineio.Slot, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.held {
		return nil, http.StatusTooManyRequests
	}
	o.held = true
	return o, 0
}

func (o *oneSlot) Release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.held = false
	o.releases++
}

// TestAdmit: Config.Admit refuses a session with its status (the gateway
// keeps every per-address count there), and a session's slot is released
// once, when it ends.
func TestAdmit(t *testing.T) {
	t.Parallel()
	slot := &oneSlot{}
	_, base := start(t, func(c *engineio.Config) { c.Admit = slot.admit })
	sid := handshake(t, base)
	if status, _ := do(t, "GET", base+"&transport=polling", "", nil); status != http.StatusTooManyRequests {
		t.Fatalf("second session: %d, want 429", status)
	}
	do(t, "POST", base+"&transport=polling&sid="+sid, "1", nil) // close the first
	roomtest.Eventually(t, 5*time.Second, func() error {
		if status, _ := do(t, "GET", base+"&transport=polling", "", nil); status != 200 {
			return errors.New("still refused")
		}
		return nil
	})
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if slot.releases != 1 {
		t.Fatalf("slot released %d times, want 1", slot.releases)
	}
}

func dialWS(t *testing.T, base, query string) *websocket.Conn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"&transport=websocket"+query, nil)
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func read(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func closeCode(ws *websocket.Conn) int {
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return 0
		}
	}
}

func TestWebSocketErrors(t *testing.T) {
	t.Parallel()
	webSocketErrors(t, nil)
}

func webSocketErrors(t *testing.T, edit func(*engineio.Config)) {
	_, base := start(t, edit)
	tests := []struct {
		name string
		typ  int
		msg  string
		code int
	}{
		{"not a packet", websocket.TextMessage, "abc", websocket.CloseProtocolError},
		{"empty", websocket.TextMessage, "", websocket.CloseProtocolError},
		{"upgrade packet", websocket.TextMessage, "5", websocket.CloseProtocolError},
		{"oversized", websocket.TextMessage, "4" + strings.Repeat("x", 1000), websocket.CloseMessageTooBig},
		{"close packet", websocket.TextMessage, "1", websocket.CloseNormalClosure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := dialWS(t, base, "")
			if open := read(t, ws); !strings.HasPrefix(open, `0{"sid":`) || !strings.Contains(open, `"upgrades":[]`) {
				t.Fatalf("open packet %q", open)
			}
			_ = ws.WriteMessage(tt.typ, []byte(tt.msg))
			if code := closeCode(ws); code != tt.code {
				t.Fatalf("close code %d, want %d", code, tt.code)
			}
		})
	}
}

// TestUpgrade: probe, the waiting poll ends with a noop, upgrade; then
// polling and a second WebSocket are refused and the session goes on.
func TestUpgrade(t *testing.T) {
	t.Parallel()
	upgrade(t, nil)
}

func upgrade(t *testing.T, edit func(*engineio.Config)) {
	_, base := start(t, edit)
	sid := handshake(t, base)
	url := base + "&transport=polling&sid=" + sid
	poll := make(chan string, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			poll <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		poll <- string(b)
	}()
	ws := dialWS(t, base, "&sid="+sid)
	_ = ws.WriteMessage(websocket.TextMessage, []byte("2probe"))
	if got := read(t, ws); got != "3probe" {
		t.Fatalf("probe answer %q", got)
	}
	if got := <-poll; got != "6" {
		t.Fatalf("waiting poll got %q, want noop", got)
	}
	_ = ws.WriteMessage(websocket.TextMessage, []byte("5"))
	_ = ws.WriteMessage(websocket.TextMessage, []byte("4hi"))
	if got := read(t, ws); got != "4hi" {
		t.Fatalf("echo %q", got)
	}
	if status, _ := do(t, "GET", url, "", nil); status != 400 {
		t.Fatalf("poll after the upgrade: %d", status)
	}
	second := dialWS(t, base, "&sid="+sid)
	if code := closeCode(second); code == 0 {
		t.Fatal("second WebSocket not closed")
	}
	_ = ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2})
	if typ, b, err := ws.ReadMessage(); err != nil || typ != websocket.BinaryMessage || string(b) != "\x01\x02" {
		t.Fatalf("binary echo %d %q %v", typ, b, err)
	}
}

// TestShutdown closes a waiting poll with the close packet and a WebSocket
// with the given code, and leaves no goroutine behind.
func TestShutdown(t *testing.T) {
	base0 := roomtest.Goroutines()
	s := engineio.NewServer(engineio.Config{PingInterval: time.Minute, PingTimeout: time.Minute, MaxPayload: 1000, Open: engineio.Echo})
	ts := httptest.NewServer(s)
	base := ts.URL + "/engine.io/?EIO=4"
	sid := handshake(t, base)
	poll := make(chan string, 1)
	go func() {
		resp, err := http.Get(base + "&transport=polling&sid=" + sid)
		if err != nil {
			poll <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		poll <- string(b)
	}()
	ws := dialWS(t, base, "")
	read(t, ws)
	roomtest.Eventually(t, 5*time.Second, func() error {
		if s.Len() != 2 || s.WaitingPolls() != 1 {
			return errors.New("sessions not open or the poll not waiting yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx, 1012, "bye"); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(ws); code != 1012 {
		t.Fatalf("WebSocket close code %d", code)
	}
	if got := <-poll; got != "1" {
		t.Fatalf("waiting poll got %q", got)
	}
	if status, _ := do(t, "GET", base+"&transport=polling", "", nil); status != 503 {
		t.Fatalf("handshake after shutdown: %d", status)
	}
	ts.Close()
	http.DefaultClient.CloseIdleConnections()
	roomtest.WaitGoroutines(t, base0)
}

// TestCloseStatus: a session records how it ended, for the disconnect
// metric: the client's close code and that the client closed, or the
// server's.
func TestCloseStatus(t *testing.T) {
	t.Parallel()
	closeStatus(t, nil)
}

func closeStatus(t *testing.T, edit func(*engineio.Config)) {
	conns := make(chan *engineio.Conn, 1)
	_, base := start(t, func(c *engineio.Config) {
		if edit != nil {
			edit(c)
		}
		c.Open = func(conn *engineio.Conn) engineio.Handler {
			conns <- conn
			return engineio.Echo(conn)
		}
	})
	tests := []struct {
		name     string
		end      func(*websocket.Conn)
		code     int
		byClient bool
	}{
		{"close frame", func(ws *websocket.Conn) {
			_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""))
		}, websocket.CloseGoingAway, true},
		{"close packet", func(ws *websocket.Conn) { _ = ws.WriteMessage(websocket.TextMessage, []byte("1")) }, websocket.CloseNormalClosure, true},
		{"dropped", func(ws *websocket.Conn) { ws.NetConn().Close() }, 1006, true},
		{"oversized", func(ws *websocket.Conn) {
			_ = ws.WriteMessage(websocket.TextMessage, []byte("4"+strings.Repeat("x", 1000)))
		}, websocket.CloseMessageTooBig, false},
		{"invalid packet", func(ws *websocket.Conn) { _ = ws.WriteMessage(websocket.TextMessage, []byte("abc")) }, websocket.CloseProtocolError, false},
	}
	for _, tt := range tests {
		ws := dialWS(t, base, "")
		read(t, ws)
		c := <-conns
		tt.end(ws)
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the session did not end", tt.name)
		}
		if code, byClient := c.CloseStatus(); code != tt.code || byClient != tt.byClient {
			t.Errorf("%s: CloseStatus %d, by client %v; want %d, %v", tt.name, code, byClient, tt.code, tt.byClient)
		}
	}
}
