// Package gateway assembles a roomcast gateway: the NATS connection (and
// the embedded NATS server when no URL is configured), the hub, the room
// catalogue and the HTTP server with the WebSocket endpoint, and shuts them
// down in order.
//
// Goroutines: Start launches the HTTP server and the catalogue watcher, and
// net/http runs one handler goroutine per connection, which runs that
// client's session; Shutdown ends them all and waits for them.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/roomcast/roomcast/internal/uring"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/client"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/hub"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
	"github.com/roomcast/roomcast/pkg/sse"
	"github.com/roomcast/roomcast/pkg/ws"

	"github.com/roomcast/roomcast/pkg/engineio"
	"github.com/roomcast/roomcast/pkg/socketio"
)

// Options are what Start takes besides the configuration.
type Options struct {
	// Listener, if set, is served instead of listening on cfg.Listen.
	Listener net.Listener
	// Log is the logger; nil discards.
	Log *slog.Logger
	// SocketIOAuthorize, if set, decides every Socket.IO namespace CONNECT
	// (with the client's auth payload) and which rooms it may join; nil
	// allows everything.
	SocketIOAuthorize socketio.Authorize

	// uringSetup replaces io_uring_setup(2) (tests refuse io_uring).
	uringSetup uring.SetupFunc
}

// Gateway is a running gateway.
type Gateway struct {
	cfg      config.Config
	log      *slog.Logger
	embedded *server.Server // nil with an external NATS
	nc       *nats.Conn
	hub      *hub.Hub
	catalog  *catalog.Store
	metrics  *metrics.Metrics
	registry *prometheus.Registry
	upgrader websocket.Upgrader
	admit    *admission
	poller   *ws.Poller // nil: a reader goroutine per connection
	writer   *ws.Writer // nil: a writer goroutine per busy connection
	sessCfg  ws.Config
	// The rules every transport's clients share.
	clients *client.Rules
	sseCfg  sse.Config
	srv     *http.Server
	ln      net.Listener

	// The embedded server's store: locked while it runs, and removed
	// after it when it was a temporary one.
	storeLock *os.File
	tempStore string
	// NATS credentials of the gateway's connection and of in-process
	// producers: the configured ones, or generated for the embedded
	// server when auth.mode is not none.
	natsCreds, producerCreds broker.Credentials

	metricsSrv *http.Server // with metrics_listen
	metricsLn  net.Listener
	sio        *socketio.Server // nil when socketio.enabled is false
	pending    *pendingPool     // Socket.IO sessions waiting for their CONNECT's token
	sioPerAddr *slots           // Socket.IO sessions per address (socketio.max_sessions_per_ip); nil: no bound
	eioEcho    *engineio.Server // /engine.io/ in socketio.conformance mode

	// The sessions budget admit enforces: limits.max_connections, or what
	// 0 (automatic) came to. For roomcast_max_connections.
	maxSessions int

	history bool          // updates carry seq; snapshot and resume from the stream
	refresh chan struct{} // capacity 1: NATS reconnected, bring rooms up to date

	draining atomic.Bool
	cancel   context.CancelFunc // stops the background goroutines
	bg       sync.WaitGroup     // HTTP server, catalogue watcher, refresher

	mu       sync.Mutex              // guards sessions
	sessions map[clientConn]struct{} // /ws sessions and SSE streams
	conns    sync.WaitGroup          // session handlers

	shutdownOnce sync.Once
	shutdownErr  error
}

// Start brings a gateway up: NATS first (starting the embedded server if
// cfg.NATS.URL is empty), then the HTTP listener. On error everything
// started so far is stopped again.
func Start(cfg config.Config, opts Options) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		cfg:      cfg,
		log:      log,
		registry: prometheus.NewRegistry(),
		sessions: make(map[clientConn]struct{}),
		refresh:  make(chan struct{}, 1),
	}
	g.natsCreds, g.producerCreds = cfg.NATS.Credentials(), cfg.NATS.Credentials()
	fds, err := raiseFDLimit()
	if err != nil {
		log.Warn("cannot read the open-file limit; connection budgets come from the configuration alone", "err", err)
	}
	budget, err := connectionBudget(cfg.Limits, fds)
	if err != nil {
		return nil, err
	}
	log.Info("connection budget", "open_file_limit", budget.fds, "reserved_fds", cfg.Limits.ReservedFDs,
		"max_tcp_connections", budget.tcp, "max_connections", budget.sessions)
	g.maxSessions = budget.sessions
	started := false
	defer func() {
		if !started {
			g.closePoller()
			_ = g.stopNATS(context.Background())
		}
	}()

	if cfg.NATS.URL == "" {
		// One store per process: a directory shared by two gateways
		// would be written by both. Without a configured one, a fresh
		// temporary directory, removed at the end.
		dir := cfg.NATS.Embedded.StoreDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "roomcast-jetstream-"); err != nil {
				return nil, fmt.Errorf("nats.embedded.store_dir: a temporary directory: %w", err)
			}
			g.tempStore = dir
		}
		if g.storeLock, err = lockStore(dir); err != nil {
			return nil, err
		}
		ecfg := broker.EmbeddedConfig{Listen: cfg.NATS.Embedded.Listen, StoreDir: dir, JetStream: true}
		if cfg.Auth.Mode != "none" {
			ea := newEmbeddedAuth(cfg)
			ecfg.Users, g.natsCreds, g.producerCreds = ea.users, ea.gateway, ea.producer
		}
		g.embedded, err = broker.StartEmbedded(ecfg, log)
		if err != nil {
			return nil, err
		}
		log.Info("embedded NATS started", "listen", g.embedded.Addr().String(), "store_dir", dir,
			"credentials_required", len(ecfg.Users) > 0, "producer_user", cfg.NATS.Embedded.ProducerPassword != "")
	}
	g.nc, err = broker.Connect(broker.ConnConfig{URL: cfg.NATS.URL, Embedded: g.embedded, Name: cfg.NATS.Name, Credentials: g.natsCreds}, log)
	if err != nil {
		return nil, err
	}
	hopts := hub.Options{
		MaxUpdateBytes: cfg.Limits.MaxUpdateBytes, Linger: cfg.RoomLinger, HistoryDepth: cfg.History.Depth,
		Memory: cfg.History.Memory, MemoryBytes: cfg.History.MemoryBytes, FetchTimeout: cfg.History.FetchTimeout,
		ResumeRate: cfg.History.ResumesPerSecond, ResumeBurst: cfg.History.ResumeBurst,
	}
	live := ""
	if cfg.History.Enabled {
		hcfg := broker.HistoryConfig{
			Stream: cfg.History.Stream, SubjectPrefix: cfg.NATS.SubjectPrefix, LivePrefix: cfg.History.LivePrefix,
			Depth: cfg.History.Depth, MaxAge: cfg.History.MaxAge, Replicas: cfg.History.Replicas,
		}
		err := ensureStream(g.nc, hcfg, log)
		switch {
		case errors.Is(err, broker.ErrNoJetStream):
			log.Warn("NATS has no JetStream: running without history (no seq, no snapshot from the stream, since refused); set history.enabled: false to run this way on purpose")
		case err != nil:
			return nil, err
		default:
			live = cfg.History.LivePrefix
			hopts.History = broker.NewHistory(g.nc, hcfg)
			g.history = true
		}
	}
	rooms, err := broker.NewRooms(g.nc, cfg.NATS.SubjectPrefix, live)
	if err != nil {
		return nil, err
	}

	g.metrics = metrics.New(g.registry)
	// CPU, memory, descriptors against their limit, GC: what the
	// autoscaler and the first hard limits are about.
	g.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.hub = hub.New(rooms, hopts, g.metrics, g.registry, log)
	g.registerGauges()
	g.catalog = catalog.NewStore(cfg.NATS.CatalogBucket, cfg.History.Replicas, cfg.NATS.CatalogExpireAfter, log)
	if cfg.TLS.CertFile == "" {
		if g.poller, err = ws.NewPoller(log, g.metrics); err != nil {
			log.Warn("no epoll: one reader goroutine per connection", "err", err)
		}
		if g.writer, err = startWriter(cfg, opts, log); err != nil {
			return nil, err
		}
	}
	g.registerWriterMetrics()
	g.clients = client.NewRules(g.hub, client.Options{
		MaxRooms:     cfg.Limits.MaxRoomsPerConnection,
		CommandRate:  cfg.Limits.CommandsPerSecond,
		CommandBurst: cfg.Limits.CommandBurst,
		History:      g.history,
	}, g.metrics)
	g.sessCfg = ws.Config{
		PingInterval:  cfg.PingInterval,
		PongTimeout:   cfg.PongTimeout,
		WriteTimeout:  cfg.WriteTimeout,
		MaxFrameBytes: int64(cfg.Limits.MaxFrameBytes),
		MaxBatchBytes: cfg.Queue.BatchBytes,
		// Compress is set per client, when it negotiated permessage-deflate.
		CompressMinBytes: max(cfg.Compression.MinBytes, 1),
		CoalesceDelay:    cfg.Queue.CoalesceDelay,
		Poller:           g.poller,
		Writer:           g.writer,
		Outbox: outbox.Limits{
			ConflateAfter: cfg.Queue.ConflateAfter,
			MaxMessages:   cfg.Queue.MaxMessages,
			MaxBytes:      cfg.Queue.MaxBytes,
		},
	}
	g.sseCfg = sse.Config{
		Outbox:       g.sessCfg.Outbox,
		PingInterval: cfg.PingInterval, WriteTimeout: cfg.WriteTimeout,
		Retry: time.Second, // then the load balancer picks a replica
	}
	g.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		// The session reads the socket itself, so gorilla's read buffer is
		// never used: keep it at gorilla's minimum. A pooled write buffer
		// is held only while a frame is being written, so idle connections
		// cost no write buffer.
		ReadBufferSize:    1,
		WriteBufferSize:   4096,
		WriteBufferPool:   &sync.Pool{},
		EnableCompression: cfg.Compression.Enabled,
		// serveWS has checked the origin before the token.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			g.metrics.ConnectionsRefused.WithLabelValues("bad_handshake").Inc()
			http.Error(w, reason.Error(), status)
		},
	}
	if g.admit, err = newAdmission(cfg, g.maxSessions, log); err != nil {
		return nil, err
	}

	g.startSocketIO(opts.SocketIOAuthorize)

	var tlsCfg *tls.Config
	if cfg.TLS.CertFile != "" {
		if tlsCfg, err = serverTLS(cfg.TLS); err != nil {
			return nil, err
		}
	}
	g.ln = opts.Listener
	if g.ln == nil {
		if g.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	// Counted before TLS, so a connection past the budget costs no
	// handshake either; inside the count, a too slow client's write
	// deadline is cut for good (ws.Listener).
	g.ln = &limitListener{
		Listener: ws.Listener(g.ln), slots: newSlots(budget.tcp, cfg.Limits.MaxTCPConnectionsPerIP),
		key: g.admit.key, exempt: g.admit.isTrusted, metrics: g.metrics, log: log,
	}
	if tlsCfg != nil {
		g.ln = tls.NewListener(g.ln, tlsCfg)
	}
	idle := &unserved{counter: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "roomcast_http_unserved_total",
		Help: "TCP connections closed before a request reached the gateway: handshake_timeout ran out (stalled or slowloris clients), headers over limits.max_header_bytes, not HTTP, or the client gave up.",
	})}
	g.registry.MustRegister(idle.counter)
	g.srv = &http.Server{
		Handler:           idle.handler(g.routes()),
		ConnContext:       idle.connContext,
		ConnState:         idle.connState,
		MaxHeaderBytes:    cfg.Limits.MaxHeaderBytes,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		// Short: an idle keep-alive connection holds a descriptor and a
		// TCP budget slot for nothing.
		IdleTimeout: cfg.IdleTimeout,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.goBackground(func() { _ = g.catalog.Run(ctx, g.nc) })
	if g.history {
		// After a reconnect, fetch what the room subscriptions missed while
		// NATS was away, also for rooms that have been quiet since.
		g.nc.SetReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection restored", "server", nc.ConnectedUrlRedacted())
			select {
			case g.refresh <- struct{}{}:
			default:
			}
		})
		g.goBackground(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-g.refresh:
					g.hub.Refresh(ctx)
				}
			}
		})
	}
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			_ = g.ln.Close()
			return nil, fmt.Errorf("metrics_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", g.metricsHandler())
		g.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: cfg.HandshakeTimeout}
		g.metricsLn = mln
		g.goBackground(func() {
			if err := g.metricsSrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "err", err)
			}
		})
	}
	g.goBackground(func() {
		if err := g.srv.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "err", err)
		}
	})
	log.Info("gateway listening", "addr", g.ln.Addr().String(), "tls", tlsCfg != nil, "auth", cfg.Auth.Mode, "nats", natsTarget(cfg))
	if g.metricsLn != nil {
		log.Info("serving metrics", "addr", g.metricsLn.Addr().String(), "path", "/metrics", "through_drain", true)
	} else {
		log.Info("serving metrics", "addr", g.ln.Addr().String(), "path", "/metrics", "through_drain", false,
			"note", "set metrics_listen to keep /metrics up while the gateway drains")
	}
	started = true
	return g, nil
}

func natsTarget(cfg config.Config) string {
	if cfg.NATS.URL == "" {
		return "embedded"
	}
	return cfg.NATS.URL
}

// goBackground runs f on a goroutine that Shutdown waits for.
func (g *Gateway) goBackground(f func()) {
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		f()
	}()
}

// Addr is the address the HTTP server listens on.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// MetricsAddr is the metrics_listen address, or nil without one.
func (g *Gateway) MetricsAddr() net.Addr {
	if g.metricsLn == nil {
		return nil
	}
	return g.metricsLn.Addr()
}

// ProducerCredentials are what an in-process producer (gateway --demo)
// connects to the gateway's NATS with.
func (g *Gateway) ProducerCredentials() broker.Credentials { return g.producerCreds }

// NATS is the gateway's NATS connection.
func (g *Gateway) NATS() *nats.Conn { return g.nc }

// Embedded is the embedded NATS server, or nil with an external one.
func (g *Gateway) Embedded() *server.Server { return g.embedded }

// Hub is the gateway's hub.
func (g *Gateway) Hub() *hub.Hub { return g.hub }

// CatalogSynced reports whether the room catalogue has been read.
func (g *Gateway) CatalogSynced() bool { return g.catalog.Synced() }

// Registry holds the gateway's metrics.
func (g *Gateway) Registry() *prometheus.Registry { return g.registry }

// Ready reports whether the gateway should receive traffic: NATS connected
// and not shutting down. The string says why not.
func (g *Gateway) Ready() (bool, string) {
	switch {
	case g.draining.Load():
		return false, "shutting down"
	case !g.nc.IsConnected():
		return false, "NATS " + strings.ToLower(g.nc.Status().String())
	}
	return true, "ok"
}

// Shutdown stops the gateway: /readyz turns 503, the listener closes and
// new connections are refused, every client is closed with 1012, the
// catalogue watcher stops, NATS is drained and the embedded server, if
// any, shut down. It returns when all is done or ctx ends (then what is
// left is closed hard). It may be called more than once; all calls return
// the first call's result.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.shutdownOnce.Do(func() { g.shutdownErr = g.shutdown(ctx) })
	return g.shutdownErr
}

func (g *Gateway) shutdown(ctx context.Context) error {
	start := time.Now()
	g.draining.Store(true)
	// srv.Shutdown closes the listener and idle keep-alive connections at
	// once, then waits for the requests in progress: SSE streams and
	// waiting long-polls, which end as the drain below closes them.
	// Hijacked WebSocket connections are ours to close.
	httpDone := make(chan error, 1)
	go func() { httpDone <- g.srv.Shutdown(ctx) }()

	// One drain for every transport: /ws, SSE and Socket.IO clients are
	// closed one after another over drain_window, in one order.
	clients := g.openSessions()
	clients = append(clients, g.socketIOSessions()...)
	// Mixed, so that each transport's clients leave across the whole
	// window, not one transport after another.
	rand.Shuffle(len(clients), func(i, j int) { clients[i], clients[j] = clients[j], clients[i] })
	g.log.Info("shutting down", "clients", len(clients), "drain_window", g.cfg.DrainWindow)
	closeSpread(ctx, clients, g.cfg.DrainWindow)
	errSIO := g.waitSocketIO(ctx)
	errHTTP := <-httpDone

	var errConns error
	done := make(chan struct{})
	go func() { g.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		left := g.openSessions()
		errConns = fmt.Errorf("%d clients still open at the shutdown deadline, closed hard: %w", len(left), ctx.Err())
		for _, s := range left {
			s.Abort()
		}
	}
	g.cancel()
	g.hub.Close()
	g.closePoller()
	errNATS := g.stopNATS(ctx)
	// Last: Prometheus sees readiness drop and the 1012 closes, up to the
	// end of the process.
	if g.metricsSrv != nil {
		_ = g.metricsSrv.Close()
	}
	g.bg.Wait()
	err := errors.Join(errSIO, errHTTP, errConns, errNATS)
	g.log.Info("shutdown complete", "took", time.Since(start), "err", err)
	return err
}

// clientConn is one client connection the gateway tracks and drains,
// whatever its transport.
type clientConn interface {
	// Close tells the client to go and come back elsewhere, the
	// transport's way (a WebSocket close code, an SSE close event and the
	// end of the stream).
	Close(code int, reason string)
	Abort() // drop it as a crash would
}

// queuer is a tracked client whose queue the gauges sum.
type queuer interface{ Queued() (messages, bytes int) }

// openSessions lists the /ws sessions and SSE streams now open.
func (g *Gateway) openSessions() []clientConn {
	g.mu.Lock()
	defer g.mu.Unlock()
	sessions := make([]clientConn, 0, len(g.sessions))
	for s := range g.sessions {
		sessions = append(sessions, s)
	}
	return sessions
}

// closeSpread closes the clients with 1012 one after another over window,
// so that they come back to the other replicas as a ramp. If ctx ends
// first, the rest are closed at once.
func closeSpread(ctx context.Context, sessions []clientConn, window time.Duration) {
	start := time.Now()
	for i, s := range sessions {
		at := start.Add(window * time.Duration(i) / time.Duration(len(sessions)))
		if wait := time.Until(at); wait > 5*time.Millisecond {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				window = 0
			}
		}
		s.Close(protocol.CloseServiceRestart, "server shutting down")
	}
}

// ensureStream creates or checks the history stream, retrying for a while
// so that a gateway may start before its NATS cluster is ready.
func ensureStream(nc *nats.Conn, cfg broker.HistoryConfig, log *slog.Logger) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := broker.EnsureStream(ctx, nc, cfg, log)
		cancel()
		if err == nil || errors.Is(err, broker.ErrNoJetStream) && nc.IsConnected() {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("history stream: %w (set history.enabled: false to run without history)", err)
		}
		log.Warn("history stream not ready; retrying", "err", err)
		time.Sleep(time.Second)
	}
}

// Abort stops the gateway at once, the way a crash would: the listener and
// every client connection are closed without close frames and the NATS
// connection without draining. It is for failover tests; production stops
// with Shutdown. Shutdown after Abort does nothing.
func (g *Gateway) Abort() {
	g.shutdownOnce.Do(func() {
		g.draining.Store(true)
		_ = g.srv.Close()
		g.abortSocketIO()
		// Not under g.mu: an aborted session's onDone takes it.
		for _, s := range g.openSessions() {
			s.Abort()
		}
		g.cancel()
		g.hub.Close()
		if g.metricsSrv != nil {
			_ = g.metricsSrv.Close()
		}
		g.nc.Close() // no drain: stopNATS finds it closed
		g.conns.Wait()
		g.closePoller()
		g.bg.Wait()
		_ = g.stopNATS(context.Background())
	})
}

// closePoller stops the poller and the loop writer once no session uses
// them.
func (g *Gateway) closePoller() {
	if g.poller != nil {
		g.poller.Close()
	}
	g.writer.Close()
}

// startWriter starts the event-loop writer that queue.writer and
// io.uring ask for, or none (nil): then /ws sessions have a writer
// goroutine each while they have something to send. queue.writer auto
// takes the loop only on io_uring: on write(2) its p99 in W3 is worse
// than the goroutines' (docs/performance.md).
func startWriter(cfg config.Config, opts Options, log *slog.Logger) (*ws.Writer, error) {
	mode := cfg.IO.URing
	switch {
	case cfg.Queue.Writer == "goroutine":
		return nil, nil
	case cfg.Queue.Writer == "auto" && mode == "off":
		log.Info("writer goroutine per busy connection (queue.writer auto, io.uring off)")
		return nil, nil
	case cfg.Queue.Writer == "auto":
		mode = "on"
	}
	w, err := ws.NewWriter(log, ws.WriterConfig{CoalesceDelay: cfg.Queue.CoalesceDelay, URing: mode, URingSetup: opts.uringSetup})
	switch {
	case err == nil:
		return w, nil
	case cfg.IO.URing == "on":
		return nil, err
	case cfg.Queue.Writer == "auto":
		log.Info("writer goroutine per busy connection (queue.writer auto: the event-loop writer runs only on io_uring)", "err", err)
	default:
		log.Warn("no event-loop writer: a writer goroutine per busy connection", "err", err)
	}
	return nil, nil
}

// stopNATS drains the connection and stops the embedded server.
func (g *Gateway) stopNATS(ctx context.Context) error {
	var err error
	if g.nc != nil {
		err = broker.Drain(ctx, g.nc)
	}
	if g.embedded != nil {
		g.embedded.Shutdown()
		g.embedded.WaitForShutdown()
	}
	if g.storeLock != nil {
		_ = g.storeLock.Close()
		g.storeLock = nil
	}
	if g.tempStore != "" {
		if rmErr := os.RemoveAll(g.tempStore); rmErr != nil {
			g.log.Warn("removing the temporary NATS store", "dir", g.tempStore, "err", rmErr)
		}
		g.tempStore = ""
	}
	return err
}
