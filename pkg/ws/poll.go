package ws

import (
	"log/slog"

	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/wsread"
)

// Poller watches idle sockets (package wsread); the gateway shares one
// between its native sessions and its Socket.IO WebSockets.
type Poller = wsread.Poller

// NewPoller starts a poller; on error the caller falls back to a reader
// goroutine per connection. Its failures are logged on log and counted in
// m.PollerErrors.
func NewPoller(log *slog.Logger, m *metrics.Metrics) (*Poller, error) {
	return wsread.NewPoller(log, m.PollerErrors)
}

// pollConn is a Session as the poller sees it: its Readable is the
// session's readable, kept off the Session's exported methods.
type pollConn Session

func (c *pollConn) Readable() { (*Session)(c).readable() }
