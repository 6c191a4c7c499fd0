package ws

import (
	"net"
	"sync"
	"time"
)

// Listener returns ln with its TCP connections wrapped so that the write
// deadline of a client found too slow (4008) can be cut short for good.
// Without it, the cut lasts only until the next SetWriteDeadline, and
// gorilla calls that itself before every control frame and prepared
// (compressed) frame: the writer's blocked write would then wait out a
// fresh write_timeout instead of ending now. Wrap before any TLS listener.
func Listener(ln net.Listener) net.Listener { return limitListener{ln} }

type limitListener struct{ net.Listener }

func (l limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		return &limitConn{TCPConn: tc}, nil
	}
	return c, err
}

// limitConn is a TCP connection whose write deadline can be capped: once
// limitWrites has run, no deadline later than its limit can be set.
// Embedding *net.TCPConn keeps SyscallConn (the poller), ReadFrom
// (sendfile) and CloseWrite.
type limitConn struct {
	*net.TCPConn
	mu    sync.Mutex // orders deadline changes against limitWrites
	limit time.Time  // zero: no cap
}

func (c *limitConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.limit.IsZero() && (t.IsZero() || t.After(c.limit)) {
		t = c.limit
	}
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *limitConn) SetDeadline(t time.Time) error {
	if err := c.TCPConn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// limitWrites ends the write in progress now and caps every later write
// deadline at limit.
func (c *limitConn) limitWrites(now, limit time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.limit.IsZero() || limit.Before(c.limit) {
		c.limit = limit
	}
	return c.TCPConn.SetWriteDeadline(now)
}

// tooSlowGrace is what a 4008 leaves the close frame: the write in
// progress ends at once, and nothing written after may take longer.
const tooSlowGrace = 250 * time.Millisecond

// cutWrites makes a writer blocked on the client's full socket give up
// now, and keeps every later write (the close frame, a ping) short.
func (s *Session) cutWrites() {
	nc := s.nc
	// Unwrap TLS and the gateway's counting wrapper (both have NetConn).
	for range 4 {
		w, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = w.NetConn()
	}
	now := time.Now()
	if lc, ok := nc.(*limitConn); ok {
		_ = lc.limitWrites(now, now.Add(tooSlowGrace))
		return
	}
	// Not accepted through Listener: a write set up after this may move
	// the deadline again, to write_timeout at the latest.
	_ = s.nc.SetWriteDeadline(now)
}
