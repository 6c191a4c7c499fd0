package engineio

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Conn is one Engine.IO session. Its methods are safe for concurrent use.
type Conn struct {
	srv *Server
	id  string
	ip  string
	req *http.Request // the handshake request, detached from its context
	h   Handler
	// slot is the gateway's connection slot (Config.Admit); its Release
	// is called by Server.remove, under its mu.
	slot Slot

	recvMu sync.Mutex // serialises h.Message and h.Closed
	ended  bool       // h.Closed has been called; guarded by recvMu

	mu        sync.Mutex
	queue     []Packet        // the session's own packets: handshake, pings, Send
	ws        *websocket.Conn // the WebSocket once upgraded (or opened as one)
	probeWS   *websocket.Conn // a WebSocket probing for an upgrade
	upgrading bool            // a WebSocket upgrade is under way
	probed    bool            // the probe succeeded: a poll is answered at once
	polling   bool            // a GET is waiting
	posting   bool            // a POST is being read
	closed    bool
	final     byte   // answered to a waiting poll when closed: Close, or Noop when the client closed
	finalSent bool   // a poll has been answered with final; later polls get 400
	closeCode int    // WebSocket close code
	reason    string // why the session ended
	byClient  bool   // the client closed the session, or went away

	wake     chan struct{} // capacity 1: the queue grew or the state changed
	pong     chan struct{} // capacity 1: a pong arrived
	done     chan struct{} // closed when the session ends
	upgraded chan struct{} // closed when the session has moved to a WebSocket
}

func newConn(s *Server, id, ip string, r *http.Request, ws bool) *Conn {
	c := &Conn{
		srv:      s,
		id:       id,
		ip:       ip,
		req:      r.Clone(context.Background()),
		wake:     make(chan struct{}, 1),
		pong:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		upgraded: make(chan struct{}),
	}
	if ws {
		c.queue = append(c.queue, Packet{Type: Open, Data: s.handshake(id, []string{})})
	}
	return c
}

// ID is the session id (the sid of the handshake).
func (c *Conn) ID() string { return c.id }

// Slot is what Config.Admit gave the session, or nil.
func (c *Conn) Slot() Slot { return c.slot }

// Request is the request that opened the session (headers, URL, remote
// address); its body is gone and its context never ends.
func (c *Conn) Request() *http.Request { return c.req }

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

func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
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
	probe := c.probeWS
	// A client that closes over polling may have its last poll in flight:
	// keep the session findable briefly so that the poll gets the noop
	// instead of an "unknown sid" error.
	linger := final == Noop && !c.polling && c.ws == nil
	c.mu.Unlock()
	close(c.done)
	if linger {
		time.AfterFunc(closeGrace, func() { c.srv.remove(c) })
	} else {
		c.srv.remove(c)
	}
	if probe != nil {
		_ = probe.NetConn().Close()
	}
}

// abort ends the session and drops its sockets at once.
// Abort drops the session without a close packet or frame, as a crash
// would.
func (c *Conn) Abort() { c.abort() }

func (c *Conn) abort() {
	c.close(Close, 1006, "aborted")
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws != nil {
		_ = ws.NetConn().Close()
	}
}

// take moves the waiting packets, the session's first, into dst.
func (c *Conn) take(dst []Packet) []Packet {
	c.mu.Lock()
	dst = append(dst, c.queue...)
	clear(c.queue)
	c.queue = c.queue[:0]
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return dst
	}
	return c.h.Take(dst)
}

// run is the session's heartbeat goroutine; when the session has ended it
// calls the handler's Closed.
func (c *Conn) run() {
	defer c.srv.wg.Done()
	c.heartbeat()
	c.recvMu.Lock()
	c.ended = true
	c.h.Closed(c.reason) // reason was written before done was closed
	c.recvMu.Unlock()
	c.srv.log.Debug("session closed", "sid", c.id, "reason", c.reason)
}

func (c *Conn) heartbeat() {
	t := time.NewTimer(c.srv.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		select {
		case <-c.pong: // a stray pong must not answer this ping
		default:
		}
		c.Send(Packet{Type: Ping})
		t.Reset(c.srv.cfg.PingTimeout)
		select {
		case <-c.done:
			return
		case <-c.pong:
			t.Reset(c.srv.cfg.PingInterval)
		case <-t.C:
			c.close(Close, 1000, "ping timeout")
			return
		}
	}
}

// receive handles one packet from the client. An error ends the request
// that carried it: errClosed when the packet closed the session, anything
// else for a packet that is invalid (the caller closes the session).
func (c *Conn) receive(p Packet) error {
	switch p.Type {
	case Message:
		c.recvMu.Lock()
		defer c.recvMu.Unlock()
		if c.ended {
			return errClosed
		}
		return c.h.Message(p.Data, p.Binary)
	case Pong:
		select {
		case c.pong <- struct{}{}:
		default:
		}
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
