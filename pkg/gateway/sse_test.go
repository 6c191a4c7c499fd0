package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/internal/sockettest"
	"github.com/roomcast/roomcast/pkg/gateway"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	id, event, data string
	msg             roomtest.Msg // data, parsed
}

// sseStream reads a /sse response's events on a goroutine of its own,
// which ends with the response.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	done   chan struct{} // closed when the stream has ended
}

// openSSE opens /sse?query on g with header; it returns the response
// and, if it is a 200, the stream.
func openSSE(t testing.TB, g *gateway.Gateway, query string, header http.Header) (*sseStream, *http.Response) {
	t.Helper()
	req, err := http.NewRequest("GET", roomtest.URL(g, "/sse?"+query), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	// A transport of its own, without keep-alive: nothing of the stream's
	// connection outlives it (the goroutine counts of the tests).
	resp, err := (&http.Transport{DisableKeepAlives: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		return nil, resp
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 1024), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		r := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if ev.data != "" {
					_ = json.Unmarshal([]byte(ev.data), &ev.msg)
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"), strings.HasPrefix(line, "retry: "):
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return s, resp
}

// next returns the next event, or an error at the timeout or the end.
func (s *sseStream) next(timeout time.Duration) (sseEvent, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ev := <-s.events:
		return ev, nil
	case <-s.done:
		select {
		case ev := <-s.events:
			return ev, nil
		default:
		}
		return sseEvent{}, errors.New("the stream ended")
	case <-t.C:
		return sseEvent{}, errors.New("no event in time")
	}
}

func (s *sseStream) expect(t testing.TB, op string) sseEvent {
	t.Helper()
	ev, err := s.next(10 * time.Second)
	if err != nil {
		t.Fatalf("waiting for %s: %v", op, err)
	}
	if ev.msg.Op != op {
		t.Fatalf("got %s, want %s", ev.data, op)
	}
	return ev
}

// TestSSE: a stream of two rooms gets its joins' replies and every update,
// each with an id naming the last seq of both rooms; a stream that comes
// back with that id as Last-Event-ID (what EventSource sends) gets every
// update published meanwhile, in order, with no gap and no duplicate, then
// live ones. When every stream is gone, so are the rooms and goroutines.
func TestSSE(t *testing.T) {
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	g := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	publish(t, nc, "warm-up", `{}`) // nc's reply subscription belongs to the baseline
	baseline := roomtest.Goroutines()

	s, resp := openSSE(t, g, "rooms=sse-a,sse-b", nil)
	if s == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	s.expect(t, "joined")
	s.expect(t, "joined")
	a1 := publish(t, nc, "sse-a", `{"n":1}`)
	ev := s.expect(t, "update")
	if want := fmt.Sprintf("sse-a:%d", a1); ev.id != want || ev.msg.Seq != a1 {
		t.Fatalf("id %q seq %d, want id %q", ev.id, ev.msg.Seq, want)
	}
	b1 := publish(t, nc, "sse-b", `{"n":1}`)
	ev = s.expect(t, "update")
	if want := fmt.Sprintf("sse-a:%d,sse-b:%d", a1, b1); ev.id != want {
		t.Fatalf("id %q, want %q", ev.id, want)
	}
	resp.Body.Close()
	<-s.done

	// Away for 40 updates of each room (past the queue's conflation bound:
	// a resume must not be conflated).
	var away []uint64
	for i := range 40 {
		away = append(away, publish(t, nc, "sse-a", fmt.Sprintf(`{"n":%d}`, i+2)))
		away = append(away, publish(t, nc, "sse-b", fmt.Sprintf(`{"n":%d}`, i+2)))
	}
	s, resp = openSSE(t, g, "rooms=sse-a,sse-b", http.Header{"Last-Event-ID": {ev.id}})
	if s == nil {
		t.Fatalf("status %d on resume", resp.StatusCode)
	}
	last := map[string]uint64{"sse-a": a1, "sse-b": b1}
	got := 0
	for got < len(away) {
		ev, err := s.next(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d missed updates: %v", got, len(away), err)
		}
		if ev.msg.Op != "update" {
			continue
		}
		if ev.msg.Prev == nil || *ev.msg.Prev != last[ev.msg.Room] || ev.msg.Missed {
			t.Fatalf("%s: prev %v, want %d (a gap or a duplicate)", ev.data, ev.msg.Prev, last[ev.msg.Room])
		}
		last[ev.msg.Room] = ev.msg.Seq
		got++
	}
	live := publish(t, nc, "sse-a", `{"n":"live"}`)
	if ev := s.expect(t, "update"); ev.msg.Seq != live || *ev.msg.Prev != last["sse-a"] {
		t.Fatalf("live %s, want seq %d after %d", ev.data, live, last["sse-a"])
	}
	resp.Body.Close()
	<-s.done

	roomtest.Eventually(t, 10*time.Second, func() error {
		if n := g.Hub().Rooms(); n != 0 {
			return fmt.Errorf("hub has %d rooms", n)
		}
		if n := metric(t, g, "roomcast_connections"); n != 0 {
			return fmt.Errorf("%v connections", n)
		}
		return nil
	})
	roomtest.WaitGoroutines(t, baseline)
}

// TestSSERefusals: a stream is admitted like a WebSocket (token, origin,
// limits) and a bad query is a 400 that says why; a room the token does
// not grant is an error event on a stream that goes on with the others.
func TestSSERefusals(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	g := roomtest.StartGateway(t, authConfig(t, ns.ClientURL()))
	good := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}})
	auth := http.Header{"Authorization": {"Bearer " + good}}
	tests := []struct {
		name   string
		query  string
		header http.Header
		status int
		says   string
	}{
		{"no token", "rooms=sales", nil, http.StatusUnauthorized, ""},
		{"bad token", "rooms=sales&token=nope", nil, http.StatusUnauthorized, ""},
		{"foreign origin", "rooms=sales&token=" + good, http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden, "origin"},
		{"no rooms", "token=" + good, nil, http.StatusBadRequest, "rooms"},
		{"bad room", "rooms=a%20b&token=" + good, nil, http.StatusBadRequest, "room"},
		{"bad since", "rooms=sales,x&since=4&token=" + good, nil, http.StatusBadRequest, "since"},
		{"bad history", "rooms=sales&history=forever", auth, http.StatusBadRequest, "history"},
	}
	for _, tt := range tests {
		_, resp := openSSE(t, g, tt.query, tt.header)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.status)
			continue
		}
		var body strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&body)
		if !strings.Contains(body.String(), tt.says) {
			t.Errorf("%s: body %q does not say %q", tt.name, body.String(), tt.says)
		}
	}

	// The token in the query (EventSource cannot set headers): sales is
	// granted, hr is not.
	s, resp := openSSE(t, g, "rooms=sales,hr&token="+good, nil)
	if s == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var ops []string
	for range 2 {
		ev, err := s.next(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, ev.msg.Op+":"+ev.msg.Code)
	}
	if ops[0] != "joined:" || ops[1] != "error:forbidden" {
		t.Fatalf("replies %v, want joined then error:forbidden", ops)
	}

	// max_connections_per_ip is 2: the stream above and one more.
	s2, resp := openSSE(t, g, "rooms=sales", auth)
	if s2 == nil {
		t.Fatalf("second stream: status %d", resp.StatusCode)
	}
	if _, resp := openSSE(t, g, "rooms=sales", auth); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third stream from one address: status %d, want 429", resp.StatusCode)
	}
}

// TestDrainEveryTransport: a shutdown closes /ws, SSE and Socket.IO
// clients alike, one after another over drain_window: each its
// transport's way of saying "come back elsewhere" (1012 close frame, an
// SSE close event then the end of the stream, 1012 on the Engine.IO
// WebSocket).
func TestDrainEveryTransport(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.DrainWindow = 1500 * time.Millisecond
	cfg.SocketIO.Enabled = true
	g := roomtest.StartGateway(t, cfg)
	const each = 6
	type closed struct {
		transport string
		at        time.Time
		ok        bool
	}
	results := make(chan closed, 3*each)
	for range each {
		c := roomtest.Dial(t, g)
		c.Join("sales")
		go func() {
			code := c.ExpectCloseCode(20 * time.Second)
			results <- closed{"ws", time.Now(), code == 1012}
		}()

		s, resp := openSSE(t, g, "rooms=sales", nil)
		if s == nil {
			t.Fatalf("sse: status %d", resp.StatusCode)
		}
		s.expect(t, "joined")
		go func() {
			for {
				ev, err := s.next(20 * time.Second)
				if err != nil {
					results <- closed{"sse", time.Now(), false}
					return
				}
				if ev.event == "close" {
					_, err := s.next(5 * time.Second) // then the stream ends
					results <- closed{"sse", time.Now(), strings.Contains(ev.data, `"code":1012`) && err != nil}
					return
				}
			}
		}()

		ws := dialSocketIO(t, g)
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					var ce *websocket.CloseError
					results <- closed{"socket.io", time.Now(), errors.As(err, &ce) && ce.Code == 1012}
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var first, last time.Time
	per := map[string][]time.Time{}
	for range 3 * each {
		r := <-results
		if !r.ok {
			t.Fatalf("a %s client was not told to reconnect (1012)", r.transport)
		}
		per[r.transport] = append(per[r.transport], r.at)
		if first.IsZero() || r.at.Before(first) {
			first = r.at
		}
		if r.at.After(last) {
			last = r.at
		}
	}
	if spread := last.Sub(first); spread < cfg.DrainWindow/2 {
		t.Fatalf("closes spread over %v, drain window %v", spread, cfg.DrainWindow)
	}
	for tr, at := range per {
		lo, hi := at[0], at[0]
		for _, a := range at {
			lo, hi = minTime(lo, a), maxTime(hi, a)
		}
		// Spread, not all at once: each transport's six clients span a
		// good part of the window (shuffled among 18 evenly spaced closes,
		// six span at least five gaps of window/18).
		if hi.Sub(lo) < cfg.DrainWindow/6 {
			t.Errorf("%s clients closed within %v of each other: not spread", tr, hi.Sub(lo))
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// dialSocketIO opens a Socket.IO session over WebSocket and connects the
// main namespace, speaking Engine.IO v4 by hand.
func dialSocketIO(t testing.TB, g *gateway.Gateway) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, open, err := ws.ReadMessage(); err != nil || !strings.HasPrefix(string(open), "0{") {
		t.Fatalf("engine.io open: %s %v", open, err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ws.ReadMessage(); err != nil || !strings.HasPrefix(string(ok), "40{") {
		t.Fatalf("socket.io connect: %s %v", ok, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws
}

// TestSSEStalledClient: a stream whose client stops reading (a tiny
// receive buffer, never a read) while 32 KiB updates flow is ended within
// write_timeout of its writes stalling and leaves its room; a stream
// beside it gets every update it is sent, in order, meanwhile.
func TestSSEStalledClient(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.WriteTimeout = time.Second
	g := roomtest.StartGateway(t, cfg)

	stalled, err := sockettest.DialSmallRcvBuf("tcp", g.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stalled.Close() })
	if _, err := fmt.Fprintf(stalled, "GET /sse?rooms=sales HTTP/1.1\r\nHost: %s\r\n\r\n", g.Addr()); err != nil {
		t.Fatal(err)
	}
	reader, resp := openSSE(t, g, "rooms=sales", nil)
	if reader == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	reader.expect(t, "joined")
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Members("sales"); n != 2 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})

	pad := strings.Repeat("x", 32<<10)
	stop := make(chan struct{})
	published := make(chan int, 1)
	go func() {
		i := 0
		defer func() { published <- i }()
		for ; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = nc.Publish(salesSubject, fmt.Appendf(nil, `{"n":%d,"pad":%q}`, i, pad))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	last := -1
	deadline := time.Now().Add(20 * time.Second)
	for g.Hub().Members("sales") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the stalled stream was never ended")
		}
		ev, err := reader.next(10 * time.Second)
		if err != nil {
			t.Fatalf("the reading stream: %v", err)
		}
		var u struct{ N int }
		if ev.msg.Op != "update" || json.Unmarshal(ev.msg.Data, &u) != nil {
			continue
		}
		if u.N <= last {
			t.Fatalf("the reading stream: update %d after %d", u.N, last)
		}
		last = u.N
	}
	close(stop)
	n := <-published
	t.Logf("%d updates of 32 KiB published; the reading stream's last was %d", n, last)
	if metric(t, g, "roomcast_connections") != 1 {
		t.Fatalf("%v connections, want the reading stream only", metric(t, g, "roomcast_connections"))
	}
}
