package gateway

import (
	"fmt"

	"github.com/roomcast/roomcast/pkg/config"
)

// budget is what the process can hold: TCP connections on listen, and
// WebSocket and Socket.IO sessions among them.
type budget struct {
	fds      uint64 // the open-file limit; 0: unknown
	tcp      int
	sessions int
}

// connectionBudget fits the limits into fds descriptors, keeping
// limits.reserved_fds for NATS, files and the metrics listener. A value
// set explicitly that does not fit is an error saying by how much: better
// to refuse to start than to fail accepts with "too many open files"
// under load.
func connectionBudget(l config.Limits, fds uint64) (budget, error) {
	b := budget{fds: fds, tcp: l.MaxTCPConnections, sessions: l.MaxConnections}
	if fds == 0 { // unknown: trust the configuration
		if b.sessions == 0 {
			b.sessions = config.DefaultMaxConnections
		}
		if b.tcp == 0 {
			b.tcp = b.sessions + b.sessions/10
		}
		return b, nil
	}
	avail := int(min(fds, 1<<30)) - l.ReservedFDs
	if avail < 1 {
		return b, fmt.Errorf("limits.reserved_fds: %d leaves no descriptor for connections: the open-file limit is %d (raise it, e.g. ulimit -n or LimitNOFILE=)", l.ReservedFDs, fds)
	}
	switch {
	case b.tcp == 0:
		b.tcp = avail
	case b.tcp > avail:
		return b, fmt.Errorf("limits.max_tcp_connections: %d does not fit: the open-file limit is %d and limits.reserved_fds keeps %d, leaving %d; lower it by %d or raise the limit (ulimit -n, LimitNOFILE=)",
			b.tcp, fds, l.ReservedFDs, avail, b.tcp-avail)
	}
	switch {
	case b.sessions == 0:
		b.sessions = min(config.DefaultMaxConnections, b.tcp)
	case b.sessions > b.tcp:
		return b, fmt.Errorf("limits.max_connections: %d does not fit: the open-file limit is %d and limits.reserved_fds keeps %d, leaving %d TCP connections; lower it by %d or raise the limit (ulimit -n, LimitNOFILE=)",
			b.sessions, fds, l.ReservedFDs, b.tcp, b.sessions-b.tcp)
	}
	return b, nil
}
