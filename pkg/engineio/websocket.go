package engineio

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
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
// on, or one probing for an upgrade. The socket is read by wsread's frame
// parser, fed by the Poller (no goroutine while idle) or, without one, by
// a reader goroutine; frames are written whole, one Write each (see
// writeFrame). No gorilla Conn is kept: it would cost an idle session
// about 700 bytes for buffers and state it never uses.
type wsConn struct {
	c  *Conn
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

func (c *Conn) newWS(nc net.Conn, probing bool) *wsConn {
	return &wsConn{
		c: c, nc: nc, probing: probing,
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
	nc, err := s.upgrade(w, r)
	if err != nil {
		c.abort()
		return // upgrade has answered
	}
	wc := c.newWS(nc, false)
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
		if nc, err := c.srv.upgrade(w, r); err == nil {
			msg := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "session already upgraded")
			_ = writeFrame(nc, opClose, 0, msg, time.Now().Add(closeGrace))
			_ = nc.Close()
		}
		return
	}
	c.upgrading = true // a second upgrade is refused from now on
	c.mu.Unlock()
	nc, err := c.srv.upgrade(w, r)
	c.mu.Lock()
	if err != nil || c.closed {
		c.upgrading = false
		c.mu.Unlock()
		if err == nil {
			_ = nc.Close()
		}
		return
	}
	wc := c.newWS(nc, true)
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
// read: it reads all there is, handles it, and takes the next event
// (Rearm).
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
		_ = writeFrame(w.nc, opPong, 0, payload, time.Now().Add(c.srv.cfg.WriteTimeout))
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
		if len(payload) == 1 || len(payload) >= 2 && !wsread.ValidCloseCode(code) {
			code = websocket.CloseProtocolError
			answer = websocket.FormatCloseMessage(code, "")
		}
		_ = writeFrame(w.nc, opClose, 0, answer, time.Now().Add(closeGrace))
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
		if writeFrame(w.nc, opText, Pong, []byte("probe"), time.Now().Add(c.srv.cfg.WriteTimeout)) != nil {
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
			if err := c.writePacket(w.nc, p); err != nil {
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
		_ = writeFrame(w.nc, opClose, 0, closePayload(code, reason), time.Now().Add(closeGrace))
	}
	w.shut()
}

func (c *Conn) writePacket(nc net.Conn, p Packet) error {
	deadline := time.Now().Add(c.srv.cfg.WriteTimeout)
	if p.Binary {
		return writeFrame(nc, opBinary, 0, p.Data, deadline)
	}
	return writeFrame(nc, opText, p.Type, p.Data, deadline)
}

// Server frame opcodes (RFC 6455 §5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPong   = 0xA
)

// frameBufs hold a frame while it is written; an idle session holds none.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledFrame: larger frames' buffers are left to the collector.
const maxPooledFrame = 64 << 10

// writeFrame writes one final, unmasked frame: the packet type character
// first when typ is not 0, then data. One Write per frame: the socket
// serialises whole writes, so the writer's frames and the reader's control
// frames (pong, close) never interleave.
func writeFrame(nc net.Conn, op, typ byte, data []byte, deadline time.Time) error {
	n := len(data)
	if typ != 0 {
		n++
	}
	bp := frameBufs.Get().(*[]byte)
	b := append((*bp)[:0], 0x80|op)
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n < 1<<16:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if typ != 0 {
		b = append(b, typ)
	}
	b = append(b, data...)
	err := nc.SetWriteDeadline(deadline)
	if err == nil {
		_, err = nc.Write(b)
	}
	if cap(b) <= maxPooledFrame {
		*bp = b[:0]
		frameBufs.Put(bp)
	}
	return err
}

// closePayload is a close frame's payload: the code, and the reason cut
// to what a control frame holds.
func closePayload(code int, reason string) []byte {
	if code == websocket.CloseNoStatusReceived {
		return nil
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	return websocket.FormatCloseMessage(code, reason)
}

// upgrade completes the WebSocket handshake (RFC 6455 §4.2) and returns
// the socket; on error the client has been answered. It checks what
// gorilla's Upgrader checks (origins were checked before) and answers the
// same errors.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	fail := func(status int, why string) (net.Conn, error) {
		writeError(w, status, codeBadRequest)
		return nil, errors.New("websocket handshake: " + why)
	}
	switch {
	case r.Method != http.MethodGet:
		return fail(http.StatusMethodNotAllowed, "method is not GET")
	case !websocket.IsWebSocketUpgrade(r):
		return fail(http.StatusBadRequest, "not a WebSocket upgrade")
	case r.Header.Get("Sec-Websocket-Version") != "13":
		w.Header().Set("Sec-Websocket-Version", "13")
		return fail(http.StatusBadRequest, "unsupported version")
	}
	key := r.Header.Get("Sec-Websocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		return fail(http.StatusBadRequest, "bad Sec-WebSocket-Key")
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fail(http.StatusInternalServerError, err.Error())
	}
	if brw.Reader.Buffered() > 0 {
		// A client may not send before it has the answer.
		_ = nc.Close()
		return nil, errors.New("websocket handshake: client sent data before the handshake completed")
	}
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	resp := make([]byte, 0, 160)
	resp = append(resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = base64.StdEncoding.AppendEncode(resp, h[:])
	resp = append(resp, "\r\n\r\n"...)
	// The HTTP server's deadlines are for requests, not for the socket.
	_ = nc.SetDeadline(time.Time{})
	_ = nc.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if _, err := nc.Write(resp); err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetWriteDeadline(time.Time{})
	return nc, nil
}

// handshakeTimeout bounds writing the handshake's answer.
const handshakeTimeout = 10 * time.Second
