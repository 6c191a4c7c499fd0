package gateway

import (
	"errors"
	"net/http"
	"net/netip"
	"sync"

	"github.com/roomcast/roomcast/pkg/engineio"
)

// pendingPool holds the Socket.IO sessions that, with auth.mode jwt,
// opened without a valid token in the handshake request and wait for the
// token in their CONNECT. It is small and separate from the connection
// slots (limits.max_connections), so tokenless handshakes, however many,
// never take a slot from an authenticated client; they leave it when
// their CONNECT succeeds or socketio.connect_timeout passes.
type pendingPool struct{ slots *slots } // keyed by admission.key

func (p *pendingPool) take(key netip.Addr) error {
	switch p.slots.take(key, true) {
	case slotFull:
		return errPendingFull
	case slotAddrFull:
		return errPendingIPFull
	}
	return nil
}

func (p *pendingPool) release(key netip.Addr) { p.slots.release(key, true) }

// Refusals by the pending pool, counted in
// roomcast_connections_refused_total{reason}.
var (
	errPendingFull   = errors.New("socketio_pending")
	errPendingIPFull = errors.New("socketio_pending_per_ip")
)

// sioSlot is a Socket.IO session's place: in the pending pool until its
// CONNECT authenticates (Promote), then a connection slot.
type sioSlot struct {
	g       *Gateway
	ip      netip.Addr
	perAddr bool // holds one of socketio.max_sessions_per_ip's (g.sioPerAddr)

	mu       sync.Mutex // guards pending and released
	pending  bool
	released bool
}

// Promote moves the session from the pending pool to a connection slot,
// or refuses its CONNECT when the gateway or the client's address is full.
func (s *sioSlot) Promote() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.pending || s.released {
		return nil
	}
	switch s.g.takeSlot(s.ip) {
	case 0:
	case http.StatusTooManyRequests:
		return errors.New("too many connections from your address")
	default:
		return errors.New("this gateway is full: try another replica later")
	}
	s.g.pending.release(s.g.admit.key(s.ip))
	s.pending = false
	return nil
}

func (s *sioSlot) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	if s.perAddr {
		s.g.sioPerAddr.release(s.g.admit.key(s.ip), true)
	}
	if s.pending {
		s.g.pending.release(s.g.admit.key(s.ip))
	} else {
		s.g.admit.release(s.ip)
	}
}

// admitSocketIO gives a new Engine.IO session its place, or the HTTP
// status that refuses it: a connection slot when auth is off or the
// handshake request carries a valid token (header, ?token= or cookie, as
// /ws), else a place in the pending pool.
func (g *Gateway) admitSocketIO(r *http.Request) (engineio.Slot, int) {
	ip := g.admit.clientIP(r)
	perAddr := g.sioPerAddr != nil
	if perAddr {
		if g.sioPerAddr.take(g.admit.key(ip), true) != slotTaken {
			return nil, http.StatusTooManyRequests
		}
	}
	slot, status := g.admitSocketIOSlot(r, ip)
	switch {
	case status != 0 && perAddr:
		g.sioPerAddr.release(g.admit.key(ip), true)
	case status == 0:
		slot.perAddr = perAddr
		return slot, 0
	}
	return nil, status
}

// admitSocketIOSlot takes the session's connection slot or pending place.
func (g *Gateway) admitSocketIOSlot(r *http.Request, ip netip.Addr) (*sioSlot, int) {
	if g.admit.auth != nil {
		if _, err := g.admit.auth.Authenticate(r); err != nil {
			err := g.pending.take(g.admit.key(ip))
			if err != nil {
				g.metrics.ConnectionsRefused.WithLabelValues(err.Error()).Inc()
				if errors.Is(err, errPendingIPFull) {
					return nil, http.StatusTooManyRequests
				}
				return nil, http.StatusServiceUnavailable
			}
			return &sioSlot{g: g, ip: ip, pending: true}, 0
		}
	}
	if status := g.takeSlot(ip); status != 0 {
		return nil, status
	}
	return &sioSlot{g: g, ip: ip}, 0
}
