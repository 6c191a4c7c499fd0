package engineio

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one Engine.IO session. Its methods are safe for concurrent use.
type Conn struct {
	srv *Server
	id  string
	req request // what Request gives back of the handshake request
	h   Handler // set once Open has returned; see opened
	// slot is the gateway's connection slot (Config.Admit); its Release
	// is called by Server.remove, under its mu.
	slot Slot

	recvMu sync.Mutex // serialises h.Message and h.Closed

	mu        sync.Mutex
	queue     []Packet               // the session's own packets: handshake, pings, Send
	ws        atomic.Pointer[wsConn] // the WebSocket once upgraded (or opened as one); set under mu
	probeWS   *wsConn                // a WebSocket probing for an upgrade
	opened    bool                   // Open has returned: Closed may be called
	upgrading bool                   // a WebSocket upgrade is under way
	probed    bool                   // the probe succeeded: a poll is answered at once
	polling   bool                   // a GET is waiting
	posting   bool                   // a POST is being read
	closed    bool
	final     byte   // answered to a waiting poll when closed: Close, or Noop when the client closed
	finalSent bool   // a poll has been answered with final; later polls get 400
	closeCode int    // WebSocket close code
	reason    string // why the session ended
	byClient  bool   // the client closed the session, or went away

	// The heartbeat is a timer, not a goroutine: beat sends a ping, and
	// PingTimeout later closes the session unless a pong has moved next.
	hbMu         sync.Mutex
	hb           *time.Timer
	next         time.Time // when beat has work: the next ping, or the pong deadline
	awaitingPong bool

	// The WebSocket writer runs only while there is something to send:
	// signal sets dirty and starts it unless writing; it clears dirty
	// before each take and stops when a take comes back empty and dirty is
	// still clear. After the session ends the last writer sends the close
	// frame and leaves writing set, so no writer starts again.
	dirty   atomic.Bool
	writing atomic.Bool

	// wake and upgraded serve polls only: nil for a session opened as a
	// WebSocket, which never polls (a nil channel's send in signal's
	// select takes the default).
	wake     chan struct{} // capacity 1: the queue grew or the state changed (for a waiting poll)
	done     chan struct{} // closed when the session ends
	upgraded chan struct{} // closed when the session has moved to a WebSocket
}

// request is what a session keeps of its handshake request for Request:
// an idle session should not hold a whole *http.Request (about 1 KiB with
// its headers). The WebSocket handshake's own headers, and the body's,
// mean nothing after the handshake and are left out.
type request struct {
	method, proto, host, remoteAddr, requestURI string
	path, rawPath, rawQuery                     string   // all a server request's URL has
	header                                      []string // name, value, name, value…: smaller than a map
	tls                                         *tls.ConnectionState
}

// handshakeOnly are the request headers that only the handshake uses.
var handshakeOnly = map[string]bool{
	"Upgrade": true, "Connection": true, "Sec-Websocket-Key": true, "Sec-Websocket-Version": true,
	"Sec-Websocket-Extensions": true, "Content-Length": true, "Content-Type": true,
}

func keepRequest(r *http.Request) request {
	kept := request{
		method: r.Method, proto: r.Proto, host: r.Host, remoteAddr: r.RemoteAddr, requestURI: r.RequestURI,
		path: r.URL.Path, rawPath: r.URL.RawPath, rawQuery: r.URL.RawQuery, tls: r.TLS,
	}
	n := 0
	for k, v := range r.Header {
		if !handshakeOnly[k] {
			n += 2 * len(v)
		}
	}
	if n > 0 {
		kept.header = make([]string, 0, n)
		for k, vs := range r.Header {
			if !handshakeOnly[k] {
				for _, v := range vs {
					kept.header = append(kept.header, k, v)
				}
			}
		}
	}
	return kept
}

func newConn(s *Server, id string, r *http.Request, ws bool) *Conn {
	c := &Conn{
		srv:  s,
		id:   id,
		req:  keepRequest(r),
		done: make(chan struct{}),
	}
	if ws {
		c.queue = append(c.queue, Packet{Type: Open, Data: s.handshake(id, []string{})})
	} else {
		c.wake, c.upgraded = make(chan struct{}, 1), make(chan struct{})
	}
	// Under hbMu: beat may run before AfterFunc has returned.
	c.hbMu.Lock()
	c.next = time.Now().Add(s.cfg.PingInterval)
	c.hb = time.AfterFunc(s.cfg.PingInterval, c.beat)
	c.hbMu.Unlock()
	return c
}

// ID is the session id (the sid of the handshake).
func (c *Conn) ID() string { return c.id }

// Slot is what Config.Admit gave the session, or nil.
func (c *Conn) Slot() Slot { return c.slot }

// Request is the request that opened the session (headers, URL, remote
// address), made anew for each call; its body is gone, the WebSocket
// handshake's headers too, and its context never ends.
func (c *Conn) Request() *http.Request {
	r := &http.Request{
		Method: c.req.method, URL: &url.URL{Path: c.req.path, RawPath: c.req.rawPath, RawQuery: c.req.rawQuery}, Proto: c.req.proto, Header: make(http.Header, len(c.req.header)/2),
		Host: c.req.host, RemoteAddr: c.req.remoteAddr, RequestURI: c.req.requestURI, TLS: c.req.tls,
		Body: http.NoBody,
	}
	r.ProtoMajor, r.ProtoMinor, _ = http.ParseHTTPVersion(r.Proto)
	for i := 0; i+1 < len(c.req.header); i += 2 {
		r.Header[c.req.header[i]] = append(r.Header[c.req.header[i]], c.req.header[i+1])
	}
	return r
}

// Done is closed when the session has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Send queues packets. It never blocks; it returns false if the session has
// ended (or ends now because too much is queued).
func (c *Conn) Send(packets ...Packet) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	if len(c.queue)+len(packets) > maxQueued {
		c.mu.Unlock()
		c.close(Close, 4008, "client too slow")
		return false
	}
	c.queue = append(c.queue, packets...)
	c.mu.Unlock()
	c.signal()
	return true
}

// signal tells whoever writes that there may be packets: a waiting poll,
// or the WebSocket writer, started if it is not running.
func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
	c.dirty.Store(true)
	if c.ws.Load() != nil {
		c.kick()
	}
}

// Wake tells the session that the handler has packets for Take. A
// handler that calls it from wherever its packets are queued needs no
// Ready channel (Ready returns nil), which saves a goroutine per WebSocket
// session. It never blocks.
func (c *Conn) Wake() { c.signal() }

// kick starts the WebSocket writer unless it is running.
func (c *Conn) kick() {
	if c.writing.CompareAndSwap(false, true) {
		// The session's own count in srv.wg is held until Closed has run,
		// and the last writer is started before that: this Add cannot
		// race Shutdown's Wait.
		c.srv.wg.Add(1)
		go c.writeLoop(c.ws.Load())
	}
}

// Close ends the session: a waiting poll gets a close packet, a WebSocket
// a close frame with code. It does not block.
func (c *Conn) Close(code int, reason string) { c.close(Close, code, reason) }

// CloseStatus reports how the session ended: its WebSocket close code
// (1006: it ended without a close frame, or the client's polling stopped)
// and whether the client closed it (or went away) rather than the server.
// It is valid once Done is closed.
func (c *Conn) CloseStatus() (code int, byClient bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode, c.byClient
}

// close ends the session on the server's initiative; the first close,
// by either side, wins.
func (c *Conn) close(final byte, code int, reason string) { c.end(final, code, reason, false) }

// clientClosed ends the session because the client closed it or went
// away.
func (c *Conn) clientClosed(final byte, code int, reason string) { c.end(final, code, reason, true) }

// failed ends the session after a failed write: a timeout is the
// server giving up on the client, anything else the client gone.
func (c *Conn) failed(err error, reason string) {
	var ne net.Error
	c.end(Close, 1006, reason, !(errors.As(err, &ne) && ne.Timeout()))
}

func (c *Conn) end(final byte, code int, reason string, byClient bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.final, c.closeCode, c.reason, c.byClient = true, final, code, reason, byClient
	c.queue = nil
	probe, ws, opened := c.probeWS, c.ws.Load(), c.opened
	// A client that closes over polling may have its last poll in flight:
	// keep the session findable briefly so that the poll gets the noop
	// instead of an "unknown sid" error.
	linger := final == Noop && !c.polling && ws == nil
	c.mu.Unlock()
	close(c.done)
	c.hb.Stop()
	if linger {
		time.AfterFunc(closeGrace, func() { c.srv.remove(c) })
	} else {
		c.srv.remove(c)
	}
	if probe != nil {
		probe.shut()
	}
	// The writer sends the close frame and closes the socket; started
	// before Closed's goroutine, which may release the session's count.
	c.signal()
	if opened {
		go c.closeHandler()
	}
}

// closeHandler calls the handler's Closed once the session has ended, on
// a goroutine of its own (Message may be running, and may be what ended
// the session). It carries the session's count in srv.wg and releases it.
func (c *Conn) closeHandler() {
	defer c.srv.wg.Done()
	c.recvMu.Lock()
	c.h.Closed(c.reason) // reason was written before done was closed
	c.recvMu.Unlock()
	c.srv.log.Debug("session closed", "sid", c.id, "reason", c.reason)
}

// Abort drops the session without a close packet or frame, as a crash
// would.
func (c *Conn) Abort() { c.abort() }

// abort ends the session and drops its sockets at once.
func (c *Conn) abort() {
	c.close(Close, 1006, "aborted")
	if ws := c.ws.Load(); ws != nil {
		ws.shut()
	}
}

// take moves the waiting packets, the session's first, into dst.
func (c *Conn) take(dst []Packet) []Packet {
	c.mu.Lock()
	dst = append(dst, c.queue...)
	// Not kept for reuse: an idle session holds no queue (a few packets
	// a minute, the pings, cost an allocation each).
	c.queue = nil
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return dst
	}
	return c.h.Take(dst)
}

// beat runs on the heartbeat timer: it sends a ping, or, when the pong to
// the last one is overdue, closes the session.
func (c *Conn) beat() {
	c.hbMu.Lock()
	defer c.hbMu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	if d := time.Until(c.next); d > 0 {
		c.hb.Reset(d) // a pong moved the next ping while this call waited
		return
	}
	if c.awaitingPong {
		c.close(Close, 1000, "ping timeout")
		return
	}
	c.awaitingPong = true
	c.next = time.Now().Add(c.srv.cfg.PingTimeout)
	c.hb.Reset(c.srv.cfg.PingTimeout)
	c.Send(Packet{Type: Ping})
}

// ponged answers the heartbeat: the next ping is PingInterval from now. A
// pong that answers no ping is ignored.
func (c *Conn) ponged() {
	c.hbMu.Lock()
	defer c.hbMu.Unlock()
	if !c.awaitingPong {
		return
	}
	c.awaitingPong = false
	c.next = time.Now().Add(c.srv.cfg.PingInterval)
	c.hb.Reset(c.srv.cfg.PingInterval)
}

// receive handles one packet from the client. An error ends the request
// that carried it: errClosed when the packet closed the session, anything
// else for a packet that is invalid (the caller closes the session).
func (c *Conn) receive(p Packet) error {
	switch p.Type {
	case Message:
		c.recvMu.Lock()
		defer c.recvMu.Unlock()
		// Nothing reaches the handler once the session has ended: not the
		// rest of a POST whose message closed it (a thousand CONNECTs,
		// say), which closeHandler's goroutine may not have seen yet, and
		// never after Closed, which runs after done is closed and under
		// recvMu.
		select {
		case <-c.done:
			return errClosed
		default:
		}
		return c.h.Message(p.Data, p.Binary)
	case Pong:
		c.ponged()
	case Ping: // not sent by v4 clients outside a probe; answer anyway
		c.Send(Packet{Type: Pong, Data: p.Data})
	case Close:
		c.clientClosed(Noop, 1000, "client closed")
		return errClosed
	case Noop:
	default:
		return ErrInvalidPacket
	}
	return nil
}
