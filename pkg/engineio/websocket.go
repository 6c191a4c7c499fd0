package engineio

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/pkg/protocol"
	"github.com/roomcast/roomcast/pkg/wsread"
)

// wsConn is one WebSocket of a session: the socket a live session runs
// on, or one probing for an upgrade. Writes go through gorilla; the
// socket is read by wsread's frame parser, fed by the Poller (no
// goroutine while idle) or, without one, by a reader goroutine.
type wsConn struct {
	c  *Conn
	ws *websocket.Conn // writes only
	nc net.Conn

	// Owned by the one reader at a time (a poller event or the reader
	// goroutine).
	frames  wsread.Reader
	probing bool // the upgrade has not completed: only probe packets are expected

	// Owned by the writer goroutine of the moment.
	lastWrite time.Time

	mu     sync.Mutex // guards polled and down (Poller.Add against shut)
	polled bool       // reg is in the poller
	down   bool       // the socket is closed
	reg    wsread.Registration

	probeTimer *time.Timer // fails a probe that does not complete in time
}

// readBufs are the buffers a poller read borrows; an idle WebSocket holds
// none.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// errStop ends a read: the session has ended, or the socket is closing.
var errStop = errors.New("engineio: stop reading")

func (c *Conn) newWS(ws *websocket.Conn, probing bool) *wsConn {
	return &wsConn{
		c: c, ws: ws, nc: ws.NetConn(), probing: probing,
		frames: wsread.Reader{MaxMessage: c.srv.cfg.MaxPayload},
	}
}

// serveNewWebSocket opens a session directly over WebSocket. The handler
// returns after the upgrade: reading is the poller's (or a reader
// goroutine's), writing a writer goroutine's while there is something to
// send.
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
	wc := c.newWS(ws, false)
	ready := c.h.Ready()
	c.mu.Lock()
	// Set even if the session ended meanwhile: the writer then sends the
	// close frame and closes the socket.
	c.ws.Store(wc)
	c.watchReady(ready)
	c.mu.Unlock()
	wc.startReading()
	c.signal() // the open packet is queued
}

// serveUpgrade takes a WebSocket that upgrades a polling session: the
// client probes with "2probe" (answered "3probe"; a waiting poll is then
// ended with a noop), and completes with "5". The session then runs on the
// WebSocket. If the probe fails the session continues over polling. The
// handler returns once the socket is being read.
func (c *Conn) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, http.StatusBadRequest, codeBadRequest)
		return
	}
	c.mu.Lock()
	if c.closed || c.ws.Load() != nil || c.upgrading {
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
	wc := c.newWS(ws, true)
	wc.probeTimer = time.AfterFunc(c.srv.cfg.PingInterval+c.srv.cfg.PingTimeout, wc.failProbe)
	c.probeWS = wc
	c.mu.Unlock()
	wc.startReading()
}

// startReading hands the socket to the poller, or to a reader goroutine
// when there is no poller or it cannot watch this socket (TLS).
func (w *wsConn) startReading() {
	srv := w.c.srv
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down {
		return
	}
	if srv.cfg.Poller != nil {
		// Set before Add: the first event may come before Add returns.
		w.polled = true
		if srv.cfg.Poller.Add(w, &w.reg, w.nc) == nil {
			return
		}
		w.polled = false
	}
	// Called inside a counted request: this Add cannot race Shutdown's
	// Wait. The goroutine ends when the socket is closed.
	srv.wg.Add(1)
	go w.readLoop()
}

// Readable is called by the poller when the socket has something to
// read: it reads all there is, handles it, and re-arms the socket.
func (w *wsConn) Readable() {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	for {
		n, err := w.reg.Read(*bp)
		if n > 0 && !w.received((*bp)[:n]) {
			return // no re-arm: the socket is closing
		}
		if err != nil {
			w.readFailed()
			return
		}
		if n == 0 {
			break
		}
	}
	if w.reg.Rearm() != nil {
		w.readFailed() // closed under us
	}
}

// readLoop is the reader goroutine of a WebSocket the poller does not
// watch; it ends when the socket is closed.
func (w *wsConn) readLoop() {
	defer w.c.srv.wg.Done()
	buf := make([]byte, 1024)
	for {
		n, err := w.nc.Read(buf)
		if n > 0 && !w.received(buf[:n]) {
			return // the socket is closing; shut closes it
		}
		if err != nil {
			w.readFailed()
			return
		}
	}
}

// readFailed: the client closed the socket or it broke.
func (w *wsConn) readFailed() {
	if w.probing {
		w.failProbe()
		return
	}
	w.c.clientClosed(Close, 1006, "transport closed")
}

// received parses bytes from the client; false when reading must stop.
func (w *wsConn) received(p []byte) bool {
	err := w.frames.Feed(p, w.frame)
	if err == nil {
		return true
	}
	w.frames.Break()
	var fe *wsread.FrameError
	if errors.As(err, &fe) {
		if w.probing {
			w.failProbe()
		} else if fe.Code == protocol.CloseMessageTooBig {
			w.c.close(Close, websocket.CloseMessageTooBig, "message too big")
		} else {
			w.c.close(Close, fe.Code, fe.Reason)
		}
	}
	return false
}

// frame handles one message or control frame from the client.
func (w *wsConn) frame(op byte, payload []byte) error {
	c := w.c
	switch op {
	case wsread.OpPing:
		_ = w.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(c.srv.cfg.WriteTimeout))
		return nil
	case wsread.OpPong:
		return nil
	case wsread.OpClose:
		if w.probing {
			w.failProbe()
			return errStop
		}
		// Answer with the client's code, as RFC 6455 asks (and gorilla's
		// default close handler did).
		code, answer := websocket.CloseNormalClosure, []byte{}
		if len(payload) >= 2 {
			code = int(payload[0])<<8 | int(payload[1])
			answer = websocket.FormatCloseMessage(code, "")
		}
		if len(payload) == 1 || len(payload) >= 2 && !validCloseCode(code) {
			code = websocket.CloseProtocolError
			answer = websocket.FormatCloseMessage(code, "")
		}
		_ = w.ws.WriteControl(websocket.CloseMessage, answer, time.Now().Add(closeGrace))
		c.clientClosed(Close, code, "transport closed")
		return errStop
	}
	if w.probing {
		return w.probe(op, payload)
	}
	p := Packet{Type: Message, Data: bytes.Clone(payload), Binary: true}
	if op == wsread.OpText {
		var err error
		// A copy: the read buffer is reused, the handler may keep data.
		if p, err = decodeText(bytes.Clone(payload)); err != nil {
			c.close(Close, websocket.CloseProtocolError, "invalid packet")
			return errStop
		}
	}
	if err := c.receive(p); err != nil {
		if !errors.Is(err, errClosed) {
			c.srv.log.Debug("invalid packet", "sid", c.id, "err", err)
			c.close(Close, websocket.CloseProtocolError, "invalid packet")
		}
		return errStop
	}
	return nil
}

// probe handles a message of the upgrade handshake. Frames after the "5"
// in the same read are the live session's: frame sees probing cleared.
func (w *wsConn) probe(op byte, data []byte) error {
	c := w.c
	switch {
	case op == wsread.OpText && bytes.Equal(data, []byte("2probe")):
		_ = w.ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		if w.ws.WriteMessage(websocket.TextMessage, []byte("3probe")) != nil {
			w.failProbe()
			return errStop
		}
		c.mu.Lock()
		c.probed = c.probeWS == w
		c.mu.Unlock()
		c.signal() // a waiting poll answers noop now
		return nil
	case op == wsread.OpText && len(data) == 1 && data[0] == Upgrade:
		ready := c.h.Ready()
		c.mu.Lock()
		ok := c.probed && !c.closed && c.probeWS == w
		if ok {
			c.ws.Store(w)
			c.probeWS = nil
			c.watchReady(ready)
		}
		c.mu.Unlock()
		if !ok {
			w.failProbe()
			return errStop
		}
		w.probing = false
		w.probeTimer.Stop()
		close(c.upgraded)
		c.signal() // start the writer on what polling left waiting
		return nil
	}
	w.failProbe()
	return errStop
}

// failProbe gives up an upgrade: the session goes on over polling and
// the probing socket is closed. It does nothing once the upgrade has
// completed.
func (w *wsConn) failProbe() {
	c := w.c
	c.mu.Lock()
	if c.probeWS != w {
		c.mu.Unlock()
		if c.ws.Load() != w {
			w.shut() // refused at "5", or the session ended
		}
		return
	}
	c.probeWS, c.probed, c.upgrading = nil, false, false
	c.mu.Unlock()
	w.probeTimer.Stop()
	c.signal()
	w.shut()
}

// shut closes the socket, out of the poller first (its descriptor number
// may be reused at once). Reading ends with it.
func (w *wsConn) shut() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down {
		return
	}
	w.down = true
	if w.polled {
		w.reg.Remove()
	}
	_ = w.nc.Close()
}

// writeLoop writes the session's packets, one frame each, until there is
// nothing left; then it ends, so an idle WebSocket holds no writer. When
// the session has ended it sends the close frame and closes the socket,
// which ends the reading.
func (c *Conn) writeLoop(w *wsConn) {
	defer c.srv.wg.Done()
	var batch []Packet
	for {
		select {
		case <-c.done:
			c.finishWS(w)
			return // writing stays set: no writer starts again
		default:
		}
		c.dirty.Store(false)
		batch = c.take(batch[:0])
		if len(batch) == 0 {
			c.writing.Store(false)
			// A signal between the take and the Store (the session's end
			// among them) found the flag set and started no writer: take
			// over its work.
			if (c.dirty.Load() || c.isDone()) && c.writing.CompareAndSwap(false, true) {
				continue
			}
			return
		}
		for _, p := range batch {
			if gap := c.srv.cfg.FrameGap - time.Since(w.lastWrite); gap > 0 {
				t := time.NewTimer(gap)
				select {
				case <-t.C:
				case <-c.done:
				}
				t.Stop()
			}
			w.lastWrite = time.Now()
			if err := c.writePacket(w.ws, p); err != nil {
				c.failed(err, "write failed")
				w.shut()
				return // writing stays set: the session has ended
			}
		}
		clear(batch)
	}
}

// watchReady starts, for a handler that signals Ready rather than calling
// Wake, a goroutine that turns its signals into Wake for the writer; it
// ends with the session. Called with c.mu held, on a session that has not
// ended: its count in srv.wg is held, so this Add cannot race Shutdown's
// Wait.
func (c *Conn) watchReady(ready <-chan struct{}) {
	if ready == nil || c.closed {
		return
	}
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		for {
			select {
			case <-ready:
				c.signal()
			case <-c.done:
				return
			}
		}
	}()
}

func (c *Conn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// finishWS sends the close frame of an ended session and closes the
// socket.
func (c *Conn) finishWS(w *wsConn) {
	c.mu.Lock()
	code, reason := c.closeCode, c.reason
	// The client's own close frame was answered by the reader already.
	answered := c.byClient && c.final == Close
	c.mu.Unlock()
	if code != 1006 && !answered {
		msg := websocket.FormatCloseMessage(code, reason)
		_ = w.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	}
	w.shut()
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

// validCloseCode: the codes a peer may send (RFC 6455 §7.4).
func validCloseCode(c int) bool {
	switch {
	case c >= 1000 && c <= 1003, c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}
