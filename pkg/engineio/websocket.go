package engineio

import (
	"bytes"
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// serveNewWebSocket opens a session directly over WebSocket and serves it
// on this goroutine until the socket ends.
func (s *Server) serveNewWebSocket(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, http.StatusBadRequest, codeBadRequest)
		return
	}
	// Admission first, so that a refused client gets an HTTP status it
	// can act on (503: try another replica; 429: too many from you).
	c, status := s.newConn(r, true)
	if c == nil {
		http.Error(w, http.StatusText(status), status)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		c.abort()
		return // the upgrader has answered
	}
	c.mu.Lock()
	c.ws = ws
	c.mu.Unlock()
	c.serveWebSocket(ws)
}

// serveUpgrade takes a WebSocket that upgrades a polling session: the
// client probes with "2probe" (answered "3probe"; a waiting poll is then
// ended with a noop), and completes with "5". The session then runs on the
// WebSocket, on this goroutine. If the probe fails the session continues
// over polling.
func (c *Conn) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, http.StatusBadRequest, codeBadRequest)
		return
	}
	c.mu.Lock()
	if c.closed || c.ws != nil || c.upgrading {
		c.mu.Unlock()
		// Already upgraded or upgrading: accept the socket and close it at
		// once, as the reference server does (clients expect a close, not
		// a failed handshake).
		if ws, err := c.srv.upgrader.Upgrade(w, r, nil); err == nil {
			msg := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "session already upgraded")
			_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
			_ = ws.Close()
		}
		return
	}
	c.upgrading = true // a second upgrade is refused from now on
	c.mu.Unlock()
	ws, err := c.srv.upgrader.Upgrade(w, r, nil)
	c.mu.Lock()
	if err != nil || c.closed {
		c.upgrading = false
		c.mu.Unlock()
		if err == nil {
			_ = ws.Close()
		}
		return
	}
	c.probeWS = ws
	c.mu.Unlock()

	if !c.probe(ws) {
		c.mu.Lock()
		c.probeWS, c.probed, c.upgrading = nil, false, false
		c.mu.Unlock()
		c.signal()
		_ = ws.Close()
		return
	}
	c.serveWebSocket(ws)
}

// probe runs the upgrade handshake on ws and reports whether the session
// now runs on it.
func (c *Conn) probe(ws *websocket.Conn) bool {
	ws.SetReadLimit(int64(c.srv.cfg.MaxPayload))
	deadline := time.Now().Add(c.srv.cfg.PingInterval + c.srv.cfg.PingTimeout)
	_ = ws.SetReadDeadline(deadline)
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil || typ != websocket.TextMessage {
			return false
		}
		switch {
		case bytes.Equal(data, []byte("2probe")):
			_ = ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
			if ws.WriteMessage(websocket.TextMessage, []byte("3probe")) != nil {
				return false
			}
			c.mu.Lock()
			c.probed = true
			c.mu.Unlock()
			c.signal() // a waiting poll answers noop now
		case len(data) == 1 && data[0] == Upgrade:
			c.mu.Lock()
			ok := c.probed && !c.closed
			if ok {
				c.ws, c.probeWS = ws, nil
			}
			c.mu.Unlock()
			if ok {
				close(c.upgraded)
				c.signal()
				_ = ws.SetReadDeadline(time.Time{})
			}
			return ok
		default:
			return false
		}
	}
}

// serveWebSocket runs the session on ws: this goroutine reads, a writer
// goroutine writes. It returns when both have ended and ws is closed.
func (c *Conn) serveWebSocket(ws *websocket.Conn) {
	ws.SetReadLimit(int64(c.srv.cfg.MaxPayload))
	writerDone := make(chan struct{})
	c.srv.wg.Add(1) // inside a counted request: cannot race Shutdown's Wait
	go func() {
		defer c.srv.wg.Done()
		defer close(writerDone)
		c.writeLoop(ws)
	}()
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				c.close(Close, websocket.CloseMessageTooBig, "message too big")
			case errors.As(err, &ce) && ce.Code == websocket.CloseNoStatusReceived:
				c.clientClosed(Close, websocket.CloseNormalClosure, "transport closed")
			case errors.As(err, &ce):
				c.clientClosed(Close, ce.Code, "transport closed")
			default:
				c.clientClosed(Close, 1006, "transport closed")
			}
			break
		}
		p := Packet{Type: Message, Data: data, Binary: true}
		if typ == websocket.TextMessage {
			if p, err = decodeText(data); err != nil {
				c.close(Close, websocket.CloseProtocolError, "invalid packet")
				break
			}
		}
		if err := c.receive(p); err != nil {
			if !errors.Is(err, errClosed) {
				c.srv.log.Debug("invalid packet", "sid", c.id, "err", err)
				c.close(Close, websocket.CloseProtocolError, "invalid packet")
			}
			break
		}
	}
	<-writerDone
	_ = ws.Close()
}

// writeLoop writes the session's packets, one frame each, until the
// session ends; then it sends the close frame and closes the socket, which
// ends the reader.
func (c *Conn) writeLoop(ws *websocket.Conn) {
	defer ws.NetConn().Close()
	var (
		batch     []Packet
		lastWrite time.Time
	)
	for {
		batch = c.take(batch[:0])
		for _, p := range batch {
			if gap := c.srv.cfg.FrameGap - time.Since(lastWrite); gap > 0 {
				t := time.NewTimer(gap)
				select {
				case <-t.C:
				case <-c.done:
				}
				t.Stop()
			}
			lastWrite = time.Now()
			if err := c.writePacket(ws, p); err != nil {
				c.failed(err, "write failed")
				return
			}
		}
		clear(batch)
		select {
		case <-c.wake:
		case <-c.h.Ready():
		case <-c.done:
			c.mu.Lock()
			code, reason := c.closeCode, c.reason
			// The client's own close frame was answered by gorilla's
			// close handler already.
			answered := c.byClient && c.final == Close
			c.mu.Unlock()
			if code != 1006 && !answered {
				msg := websocket.FormatCloseMessage(code, reason)
				_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
			}
			return
		}
	}
}

func (c *Conn) writePacket(ws *websocket.Conn, p Packet) error {
	_ = ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	if p.Binary {
		return ws.WriteMessage(websocket.BinaryMessage, p.Data)
	}
	w, err := ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	_, _ = w.Write([]byte{p.Type})
	_, _ = w.Write(p.Data)
	return w.Close()
}
