package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Socket.IO mode (--socketio websocket|polling): each connection is a
// Socket.IO v5 client on Engine.IO v4, as socket.io-client 4.x speaks it
// to /socket.io/: the Engine.IO handshake, CONNECT of the main namespace
// ("40"), pings answered with pongs, and join/leave as emits with an ack.
// The transport translates to and from the native protocol's messages so
// that the rest of the tool measures both alike: an ack becomes joined,
// left or error, and update_data an update of the connection's first
// room (the event carries the producer's payload only: no room, no seq,
// so gaps cannot be seen).

// eioConn is one Engine.IO connection: packets as their wire text (type
// character, then data).
type eioConn interface {
	send(pkt []byte) error
	next() ([]byte, error)
	setReadDeadline(t time.Time) error
	close()
}

// sioPending is what an ack answers: the native command it stands for.
type sioPending struct {
	op, room string
	id       int64
	hasID    bool
}

type sioTransport struct {
	e     eioConn
	ack   int64
	acks  map[int64]sioPending
	rooms []string // joined, in order: update_data counts for the first
}

const sioPath = "/socket.io/?EIO=4&transport="

func dialSocketIO(ctx context.Context, cfg *Config, nd *net.Dialer) (transport, error) {
	var (
		e   eioConn
		err error
	)
	switch cfg.SocketIO {
	case "websocket":
		e, err = dialEIOWebSocket(ctx, cfg, nd)
	case "polling":
		e, err = dialEIOPolling(ctx, cfg, nd)
	default:
		return nil, fmt.Errorf("--socketio %q: websocket or polling", cfg.SocketIO)
	}
	if err != nil {
		return nil, err
	}
	t := &sioTransport{e: e, acks: make(map[int64]sioPending)}
	// CONNECT the main namespace and wait for its answer.
	if deadline, ok := ctx.Deadline(); ok {
		_ = e.setReadDeadline(deadline)
	}
	if err := e.send([]byte("40")); err != nil {
		e.close()
		return nil, err
	}
	for {
		p, err := e.next()
		if err != nil {
			e.close()
			return nil, err
		}
		switch {
		case bytes.Equal(p, []byte("2")):
			if err := e.send([]byte("3")); err != nil {
				e.close()
				return nil, err
			}
		case bytes.HasPrefix(p, []byte("40")):
			_ = e.setReadDeadline(time.Time{})
			return t, nil
		case bytes.HasPrefix(p, []byte("44")):
			e.close()
			return nil, fmt.Errorf("socket.io CONNECT refused: %s", p[2:])
		}
	}
}

// send turns a native command into an emit with an ack.
func (t *sioTransport) send(cmd []byte) error {
	var c struct {
		Op    string  `json:"op"`
		Room  string  `json:"room"`
		ID    *int64  `json:"id"`
		Since *uint64 `json:"since"`
	}
	if err := json.Unmarshal(cmd, &c); err != nil {
		return err
	}
	t.ack++
	p := sioPending{op: c.Op, room: c.Room}
	if c.ID != nil {
		p.id, p.hasID = *c.ID, true
	}
	t.acks[t.ack] = p
	b := strconv.AppendInt([]byte("42"), t.ack, 10)
	b = append(b, `["`...)
	b = append(b, c.Op...)
	b = append(b, `",{"room":`...)
	b = strconv.AppendQuote(b, c.Room)
	if c.Since != nil {
		b = append(b, `,"since":`...)
		b = strconv.AppendUint(b, *c.Since, 10)
	}
	b = append(b, "}]"...)
	return t.e.send(b)
}

var updateData = []byte(`2["update_data",`)

// next returns the next message translated to the native protocol,
// answering pings on the way.
func (t *sioTransport) next(buf []byte) ([]byte, error) {
	for {
		p, err := t.e.next()
		if err != nil {
			return buf[:0], err
		}
		if len(p) == 0 {
			continue
		}
		switch p[0] {
		case '2': // ping
			if err := t.e.send([]byte("3")); err != nil {
				return buf[:0], err
			}
			continue
		case '1':
			return buf[:0], &closeError{1000}
		case '4':
		default:
			continue
		}
		m := p[1:]
		switch {
		case bytes.HasPrefix(m, updateData) && len(t.rooms) > 0:
			buf = append(buf[:0], `{"op":"update","room":"`...)
			buf = append(buf, t.rooms[0]...)
			buf = append(buf, `","data":`...)
			buf = append(buf, m[len(updateData):len(m)-1]...)
			return append(buf, '}'), nil
		case len(m) > 1 && m[0] == '3':
			if out, ok := t.answer(buf[:0], m[1:]); ok {
				return out, nil
			}
		}
	}
}

// answer translates an ack, "<id>[{...}]", into the native reply.
func (t *sioTransport) answer(buf, m []byte) ([]byte, bool) {
	i := 0
	for i < len(m) && m[i] >= '0' && m[i] <= '9' {
		i++
	}
	id, err := strconv.ParseInt(string(m[:i]), 10, 64)
	if err != nil {
		return buf, false
	}
	p, ok := t.acks[id]
	if !ok {
		return buf, false
	}
	delete(t.acks, id)
	if bytes.Contains(m[i:], []byte(`"ok":true`)) {
		op := "joined"
		if p.op == "leave" {
			op = "left"
			for j, r := range t.rooms {
				if r == p.room {
					t.rooms = append(t.rooms[:j], t.rooms[j+1:]...)
					break
				}
			}
		} else if !containsString(t.rooms, p.room) {
			t.rooms = append(t.rooms, p.room)
		}
		buf = append(buf, `{"op":"`...)
		buf = append(buf, op...)
		buf = append(buf, `","room":`...)
		buf = strconv.AppendQuote(buf, p.room)
	} else {
		code := "error"
		if _, after, ok := bytes.Cut(m[i:], []byte(`"code":"`)); ok {
			if j := bytes.IndexByte(after, '"'); j >= 0 {
				code = string(after[:j])
			}
		}
		buf = append(buf, `{"op":"error","code":`...)
		buf = strconv.AppendQuote(buf, code)
		buf = append(buf, `,"room":`...)
		buf = strconv.AppendQuote(buf, p.room)
	}
	if p.hasID {
		buf = append(buf, `,"id":`...)
		buf = strconv.AppendInt(buf, p.id, 10)
	}
	return append(buf, '}'), true
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (t *sioTransport) setReadDeadline(d time.Time) error { return t.e.setReadDeadline(d) }
func (t *sioTransport) close()                            { t.e.close() }

// eioWebSocket is Engine.IO over WebSocket: one packet per message.
type eioWebSocket struct{ c *websocket.Conn }

func dialEIOWebSocket(ctx context.Context, cfg *Config, nd *net.Dialer) (eioConn, error) {
	d := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: cfg.Timeout,
		ReadBufferSize:   2048,
		WriteBufferSize:  512,
		WriteBufferPool:  &wsWritePool,
	}
	c, resp, err := d.DialContext(ctx, "ws://"+cfg.Addr+sioPath+"websocket", nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	e := &eioWebSocket{c: c}
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(deadline)
	}
	open, err := e.next()
	if err != nil || len(open) == 0 || open[0] != '0' {
		e.close()
		return nil, fmt.Errorf("engine.io open packet: %q %v", open, err)
	}
	return e, nil
}

func (e *eioWebSocket) send(p []byte) error { return e.c.WriteMessage(websocket.TextMessage, p) }

func (e *eioWebSocket) next() ([]byte, error) {
	for {
		typ, b, err := e.c.ReadMessage()
		if err != nil {
			return nil, err
		}
		if typ == websocket.TextMessage {
			return b, nil
		}
	}
}

func (e *eioWebSocket) setReadDeadline(d time.Time) error { return e.c.SetReadDeadline(d) }
func (e *eioWebSocket) close()                            { _ = e.c.NetConn().Close() }

// eioPolling is Engine.IO over HTTP long-polling: a GET waits for the
// server's packets (separated by 0x1e), a POST carries the client's. Each
// connection has its own HTTP transport, so its waiting GET and its POSTs
// keep to their own TCP connections.
type eioPolling struct {
	url      string // with the sid
	hc       *http.Client
	ht       *http.Transport
	ctx      context.Context
	cancel   context.CancelFunc
	deadline time.Time
	queue    [][]byte // packets of the last poll not returned yet
}

func dialEIOPolling(ctx context.Context, cfg *Config, nd *net.Dialer) (eioConn, error) {
	ht := &http.Transport{
		DialContext:         nd.DialContext,
		MaxIdleConnsPerHost: 2,
		DisableCompression:  true,
	}
	e := &eioPolling{ht: ht, hc: &http.Client{Transport: ht}}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	base := "http://" + cfg.Addr + sioPath + "polling"
	body, err := e.do(ctx, http.MethodGet, base, nil)
	if err != nil {
		e.close()
		return nil, err
	}
	var open struct {
		SID string `json:"sid"`
	}
	if len(body) == 0 || body[0] != '0' || json.Unmarshal(body[1:], &open) != nil || open.SID == "" {
		e.close()
		return nil, fmt.Errorf("engine.io handshake: %q", body)
	}
	e.url = base + "&sid=" + open.SID
	return e, nil
}

func (e *eioPolling) do(ctx context.Context, method, url string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d %s", method, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

func (e *eioPolling) send(p []byte) error {
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	_, err := e.do(ctx, http.MethodPost, e.url, p)
	return err
}

func (e *eioPolling) next() ([]byte, error) {
	for len(e.queue) == 0 {
		ctx, cancel := e.ctx, context.CancelFunc(func() {})
		if !e.deadline.IsZero() {
			ctx, cancel = context.WithDeadline(e.ctx, e.deadline)
		}
		body, err := e.do(ctx, http.MethodGet, e.url, nil)
		cancel()
		if err != nil {
			return nil, err
		}
		e.queue = bytes.Split(body, []byte{0x1e})
	}
	p := e.queue[0]
	e.queue = e.queue[1:]
	return p, nil
}

func (e *eioPolling) setReadDeadline(d time.Time) error {
	e.deadline = d
	return nil
}

func (e *eioPolling) close() {
	e.cancel()
	e.ht.CloseIdleConnections()
}
