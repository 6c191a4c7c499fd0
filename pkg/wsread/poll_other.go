//go:build !linux

package wsread

import (
	"errors"
	"log/slog"
	"net"
)

// Poller is Linux-only (epoll); elsewhere NewPoller fails and every
// connection gets a reader goroutine.
type Poller struct{}

// NewPoller reports that this system has no poller.
func NewPoller(*slog.Logger, Counter) (*Poller, error) {
	return nil, errors.New("no epoll on this system")
}

// Close does nothing.
func (p *Poller) Close() {}

// Add fails: there is no poller.
func (p *Poller) Add(Readable, *Registration, net.Conn) error { return errors.New("no poller") }

// Readable is a connection watched by a Poller (see the Linux build).
type Readable interface{ Readable() }

// Registration is a connection's place in a Poller; here it is never
// filled in.
type Registration struct{}

// Rearm fails: there is no poller.
func (r *Registration) Rearm() error { return errors.New("no poller") }

// Remove does nothing.
func (r *Registration) Remove() {}

// Read fails: there is no poller.
func (r *Registration) Read([]byte) (int, error) { return 0, errors.New("no poller") }
