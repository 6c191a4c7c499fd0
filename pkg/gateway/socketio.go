package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/roomcast/roomcast/pkg/auth"
	"github.com/roomcast/roomcast/pkg/engineio"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/socketio"
)

// Timings of socketio.conformance mode, as the official test suites expect.
const (
	conformancePingInterval   = 300 * time.Millisecond
	conformancePingTimeout    = 200 * time.Millisecond
	conformanceConnectTimeout = time.Second
	conformanceMaxPayload     = 1000000
	// conformanceFrameGap spaces WebSocket frames for the suites' client,
	// which loses a message that arrives in the same read as the previous.
	conformanceFrameGap = 20 * time.Millisecond
)

// startSocketIO builds the /socket.io/ server (and the /engine.io/ echo in
// conformance mode) when socketio.enabled.
func (g *Gateway) startSocketIO(authorize socketio.Authorize) {
	c := g.cfg.SocketIO
	if !c.Enabled {
		return
	}
	if authorize == nil {
		authorize = g.socketIOAuth()
	}
	g.pending = &pendingPool{slots: newSlots(c.PendingSessions, c.PendingSessionsPerIP)}
	if c.MaxSessionsPerIP > 0 {
		// Sessions per address, authenticated or not, counted like every
		// other per-address budget of the gateway (slots).
		g.sioPerAddr = newSlots(math.MaxInt, c.MaxSessionsPerIP)
	}
	scfg := socketio.Config{
		PingInterval:   c.PingInterval,
		PingTimeout:    c.PingTimeout,
		ConnectTimeout: c.ConnectTimeout,
		WriteTimeout:   g.cfg.WriteTimeout,
		MaxPayload:     c.MaxPayload,
		// Socket.IO sessions count against limits.max_connections and
		// max_connections_per_ip like WebSocket connections, once
		// authenticated; see admitSocketIO.
		Admit: g.admitSocketIO,
		Outbox: outbox.Limits{
			ConflateAfter: g.cfg.Queue.ConflateAfter,
			MaxMessages:   g.cfg.Queue.MaxMessages,
			MaxBytes:      g.cfg.Queue.MaxBytes,
		},
		CheckOrigin: g.admit.originAllowed,
		Authorize:   authorize,
		Conformance: c.Conformance,
		// The /ws poller (nil with TLS): one epoll reader for both.
		Poller: g.poller,
	}
	if c.Conformance {
		g.log.Warn("socketio.conformance is on: test timings and echo handlers, not for production")
		scfg.PingInterval, scfg.PingTimeout = conformancePingInterval, conformancePingTimeout
		scfg.ConnectTimeout, scfg.MaxPayload = conformanceConnectTimeout, conformanceMaxPayload
		scfg.FrameGap = conformanceFrameGap
		g.eioEcho = engineio.NewServer(engineio.Config{
			PingInterval: scfg.PingInterval,
			PingTimeout:  scfg.PingTimeout,
			MaxPayload:   scfg.MaxPayload,
			FrameGap:     scfg.FrameGap,
			WriteTimeout: scfg.WriteTimeout,
			CheckOrigin:  scfg.CheckOrigin,
			Poller:       scfg.Poller,
			Open:         engineio.Echo,
			Log:          g.log,
		})
	}
	g.sio = socketio.New(g.clients, scfg, g.metrics, g.registry, g.log)
}

// socketIOAuth is the CONNECT check with auth.mode jwt: the token from the
// client's auth option (io(url, {auth: {token}})), else from the handshake
// request as for /ws (Authorization header, ?token=, the cookie). Its
// grant decides joins. Nil without auth: everything is allowed.
func (g *Gateway) socketIOAuth() socketio.Authorize {
	a := g.admit.auth
	if a == nil {
		return nil
	}
	return func(r *http.Request, payload json.RawMessage) (socketio.Grant, error) {
		var p struct {
			Token string `json:"token"`
		}
		_ = json.Unmarshal(payload, &p)
		var (
			grant *auth.Grant
			err   error
		)
		if p.Token != "" {
			grant, err = a.Verify(p.Token)
		} else {
			grant, err = a.Authenticate(r)
		}
		if err != nil {
			g.authFailed(err)
			return nil, err
		}
		return grant, nil
	}
}

// withSocketIO serves /socket.io/ (and, in conformance mode, /engine.io/)
// for every method ahead of mux: Engine.IO answers GET, POST and OPTIONS
// and refuses the rest with its own 400, which method patterns in the
// mux ("GET /") would turn into 405.
func (g *Gateway) withSocketIO(mux http.Handler) http.Handler {
	if g.sio == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/socket.io/"):
			g.sio.ServeHTTP(w, r)
		case g.eioEcho != nil && strings.HasPrefix(r.URL.Path, "/engine.io/"):
			g.eioEcho.ServeHTTP(w, r)
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// socketIOSessions stops Socket.IO (and the conformance echo) taking new
// sessions and returns the open ones, for the drain.
func (g *Gateway) socketIOSessions() []clientConn {
	var out []clientConn
	for _, s := range []*engineio.Server{g.sioEngine(), g.eioEcho} {
		if s == nil {
			continue
		}
		for _, c := range s.Stop() {
			out = append(out, c)
		}
	}
	return out
}

// waitSocketIO waits for the Socket.IO sessions the drain closed to end.
func (g *Gateway) waitSocketIO(ctx context.Context) error {
	var errs []error
	for _, s := range []*engineio.Server{g.sioEngine(), g.eioEcho} {
		if s != nil {
			errs = append(errs, s.Wait(ctx))
		}
	}
	return errors.Join(errs...)
}

func (g *Gateway) sioEngine() *engineio.Server {
	if g.sio == nil {
		return nil
	}
	return g.sio.Engine()
}

func (g *Gateway) abortSocketIO() {
	if g.sio != nil {
		g.sio.Abort()
	}
	if g.eioEcho != nil {
		g.eioEcho.Abort()
	}
}
