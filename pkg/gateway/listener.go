package gateway

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/roomcast/roomcast/pkg/metrics"
)

// Answers to a TCP connection refused at accept. They are written once,
// straight to the socket, before net/http allocates anything for it, and
// the connection is closed: a client that has already sent its request
// may see a reset instead, which is the price of not reading it.
var (
	refusedFull = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 48\r\n\r\nthis gateway is full: try another replica later\n")
	refusedAddr = []byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 39\r\n\r\ntoo many connections from your address\n")
)

// acceptWarnEvery bounds the warnings about failed accepts: a descriptor
// shortage fails every accept, and logging each would add to the load.
const acceptWarnEvery = 10 * time.Second

// limitListener counts every TCP connection the gateway accepts —
// WebSocket, Socket.IO polling, keep-alive, a handshake in progress —
// against a total and a per-address budget, and refuses a connection past
// either at once. Connections from trusted proxies count in the total
// only: their clients are counted per address by the admission, from
// X-Forwarded-For.
type limitListener struct {
	net.Listener
	slots   *slots
	key     func(netip.Addr) netip.Addr // the per-address key: /64 for IPv6
	exempt  func(netip.Addr) bool       // trusted proxies
	metrics *metrics.Metrics
	log     *slog.Logger

	mu         sync.Mutex // guards the fields below
	lastWarn   time.Time
	suppressed int // accept errors not logged since lastWarn
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.acceptFailed(err)
			}
			// net/http backs off and retries temporary errors (EMFILE).
			return nil, err
		}
		addr := peerAddr(c)
		if reason, answer := l.take(addr); answer != nil {
			l.metrics.TCPRefused.WithLabelValues(reason).Inc()
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(answer)
			_ = c.Close()
			continue
		}
		l.metrics.TCPConnections.Inc()
		return &countedConn{Conn: c, l: l, addr: addr}, nil
	}
}

// take counts a connection from addr, or returns the reason and answer
// that refuse it.
func (l *limitListener) take(addr netip.Addr) (string, []byte) {
	key, perAddr := l.slotKey(addr)
	switch l.slots.take(key, perAddr) {
	case slotFull:
		return "max_tcp_connections", refusedFull
	case slotAddrFull:
		return "max_tcp_connections_per_ip", refusedAddr
	}
	return "", nil
}

func (l *limitListener) release(addr netip.Addr) {
	l.metrics.TCPConnections.Dec()
	l.slots.release(l.slotKey(addr))
}

// slotKey is addr's per-address key, and whether it has a per-address
// budget at all (not for a trusted proxy, or an address it cannot read).
func (l *limitListener) slotKey(addr netip.Addr) (netip.Addr, bool) {
	if !addr.IsValid() || l.exempt(addr) {
		return netip.Addr{}, false
	}
	return l.key(addr), true
}

// acceptFailed counts a failed accept and logs it at warn, at most once
// per acceptWarnEvery with the number left unlogged.
func (l *limitListener) acceptFailed(err error) {
	l.metrics.AcceptErrors.Inc()
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.lastWarn) < acceptWarnEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.lastWarn, l.suppressed = now, 0
	l.mu.Unlock()
	l.log.Warn("accepting a connection failed (too many open files? see limits.max_tcp_connections and limits.reserved_fds)",
		"err", err, "not_logged_since_last", suppressed)
}

func peerAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// countedConn gives its budget back once, when it is closed, by net/http
// or, after a WebSocket hijack, by the session.
type countedConn struct {
	net.Conn
	l    *limitListener
	addr netip.Addr
	once sync.Once
}

// NetConn returns the connection it counts (as tls.Conn's does), so that
// the session can reach the TCP connection underneath.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}

// SyscallConn exposes the socket's descriptor to the session poller
// (epoll), as the unwrapped *net.TCPConn would.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("not a plain socket")
}

// CloseWrite lets net/http half-close after an error response, so the
// client reads it instead of a reset.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
