// Package sockettest holds the test clients' socket tweaks that packages
// below internal/roomtest need too (pkg/ws cannot import roomtest, which
// imports the gateway): a dialer with a small receive buffer, so that a
// client that stops reading fills up soon, and a connection that counts
// the bytes it reads.
package sockettest

import (
	"net"
	"sync/atomic"
	"syscall"
)

// Dialer returns a dialer whose sockets get a receive buffer of rcvbuf
// bytes; 0 leaves the kernel's.
func Dialer(rcvbuf int) *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if rcvbuf <= 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
		}); err != nil {
			return err
		}
		return serr
	}}
}

// DialSmallRcvBuf dials with a 4 KiB receive buffer (for
// websocket.Dialer.NetDial).
func DialSmallRcvBuf(network, addr string) (net.Conn, error) {
	return Dialer(4096).Dial(network, addr)
}

// CountingConn adds the bytes it reads to N.
type CountingConn struct {
	net.Conn
	N *atomic.Int64
}

func (c CountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.N.Add(int64(n))
	return n, err
}
