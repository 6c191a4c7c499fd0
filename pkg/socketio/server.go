// Package socketio serves Socket.IO v5 clients (socket.io-client 4.x) on
// top of package engineio, bridged to the gateway's hub: a page written
// for a Socket.IO server — io(), emit('join', {room}), emit('leave',
// {room}), on('update_data', fn) — joins the same rooms, on the same NATS
// subscriptions, as native /ws clients.
//
// Each Engine.IO session gets one session here, whose *outbox.Outbox is
// its hub Member: the hub queues native frames to it, and the session
// translates them when the transport takes them — an update becomes the
// event update_data carrying the producer's payload exactly, a joined or
// left reply the acknowledgement of the emit that asked for it. Because
// the transport takes only when the client can receive, a slow client's
// backlog stays in the outbox, where it is conflated and bounded like a
// native client's.
//
// Events from the client: join and leave with {room} (or the room name as
// a string); the ack, if the emit asked for one, gets {ok:true} or
// {ok:false,error:{code,message}}, and every refusal is also emitted as the
// event error {code,message,room}. Codes are the native protocol's.
//
// Goroutines: none of its own; see package engineio. A session's Message
// and Closed calls are serialised by engineio, so the session's rooms,
// namespaces and rate limiter are owned by whichever goroutine carries the
// current packet; what the writer's Take shares is under session.mu.
package socketio

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomcast/roomcast/pkg/client"
	"github.com/roomcast/roomcast/pkg/engineio"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/wsread"
)

// Grant is what an authorized connection may do: the rooms it may join,
// and, if it is a client.Expiring, until when.
type Grant = client.Grant

// Authorize decides a namespace CONNECT: r is the request that opened the
// Engine.IO session, auth the CONNECT packet's payload (the client's auth
// option; nil when absent). An error refuses the connection with
// CONNECT_ERROR carrying its text; a nil Grant allows every room.
type Authorize func(r *http.Request, auth json.RawMessage) (Grant, error)

// Promoter is a session's Slot that a successful CONNECT must promote
// (from a pool of unauthenticated sessions to a connection slot, say); an
// error refuses the CONNECT with its text.
type Promoter interface {
	Promote() error
}

// Config tunes a Server. See config.yaml (socketio and limits) for what
// each value protects.
type Config struct {
	PingInterval   time.Duration
	PingTimeout    time.Duration
	ConnectTimeout time.Duration // a session that connects no namespace in this time is closed
	WriteTimeout   time.Duration
	MaxPayload     int
	Admit          func(*http.Request) (engineio.Slot, int) // see engineio.Config; a Slot that is a Promoter is promoted by CONNECT
	FrameGap       time.Duration                            // see engineio.Config; conformance mode only
	Outbox         outbox.Limits
	CheckOrigin    func(*http.Request) bool
	// Authorize, if set, decides every CONNECT; nil allows everything.
	Authorize Authorize
	// Poller, if set, watches the sessions' WebSockets (see
	// engineio.Config); the gateway passes the one /ws uses.
	Poller *wsread.Poller
	// Conformance adds what the official protocol test suites expect: the
	// auth event on connect, message → message-back, message-with-ack, and
	// the /custom namespace.
	Conformance bool
}

// Server is the /socket.io/ endpoint. It is an http.Handler.
type Server struct {
	cfg     Config
	rules   *client.Rules
	metrics *metrics.Metrics
	log     *slog.Logger
	eio     *engineio.Server
}

// New returns a server on hub h and registers roomcast_socketio_sessions
// on reg.
func New(rules *client.Rules, cfg Config, m *metrics.Metrics, reg prometheus.Registerer, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, rules: rules, metrics: m, log: log}
	s.eio = engineio.NewServer(engineio.Config{
		PingInterval: cfg.PingInterval,
		PingTimeout:  cfg.PingTimeout,
		MaxPayload:   cfg.MaxPayload,
		Admit:        cfg.Admit,
		WriteTimeout: cfg.WriteTimeout,
		FrameGap:     cfg.FrameGap,
		CheckOrigin:  cfg.CheckOrigin,
		Open:         s.open,
		Poller:       cfg.Poller,
		Log:          log,
	})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roomcast_socketio_sessions",
		Help: "Open Socket.IO (Engine.IO) sessions, long-polling or WebSocket.",
	}, func() float64 { return float64(s.eio.Len()) }))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.eio.ServeHTTP(w, r) }

// Engine is the Engine.IO server under s, for the gateway's drain
// (Stop, then Close each session, then Wait).
func (s *Server) Engine() *engineio.Server { return s.eio }

// Sessions returns the number of open sessions.
func (s *Server) Sessions() int { return s.eio.Len() }

// Shutdown closes every session (WebSocket close code 1012, service
// restart: clients reconnect, ideally to another replica) and waits for
// them, or until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.eio.Shutdown(ctx, 1012, "server shutting down")
}

// Abort drops every session at once, as a crash would.
func (s *Server) Abort() { s.eio.Abort() }
