//go:build !linux

package session

import (
	"errors"
	"log/slog"
	"net"
	"syscall"

	"github.com/roomcast/roomcast/pkg/metrics"
)

// Poller is Linux-only (epoll); elsewhere NewPoller fails and every
// connection gets a reader goroutine.
type Poller struct{}

// NewPoller reports that this system has no poller.
func NewPoller(*slog.Logger, *metrics.Metrics) (*Poller, error) {
	return nil, errors.New("no epoll on this system")
}

// Close does nothing.
func (p *Poller) Close() {}

func (p *Poller) add(*Session, net.Conn) error { return errors.New("no poller") }
func (p *Poller) rearm(*Session) error         { return errors.New("no poller") }
func (p *Poller) remove(*Session)              {}

func readNonblocking(syscall.RawConn, []byte) (int, error) { return 0, errors.New("no poller") }
