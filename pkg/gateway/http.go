package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/roomcast/roomcast/pkg/auth"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/client"
	"github.com/roomcast/roomcast/pkg/protocol"
	"github.com/roomcast/roomcast/pkg/sse"
	"github.com/roomcast/roomcast/pkg/web"
	"github.com/roomcast/roomcast/pkg/ws"
)

func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /", staticHandler())
	mux.HandleFunc("GET /ws", g.serveWS)
	mux.HandleFunc("GET /sse", g.serveSSE)
	mux.HandleFunc("GET /api/rooms", g.serveRooms)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := g.Ready()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	if g.cfg.MetricsListen == "" {
		mux.Handle("GET /metrics", g.metricsHandler())
	}
	return securityHeaders(g.checkHost(g.withSocketIO(mux)))
}

// checkHost refuses, with 403 and the reason, a request whose Host the
// gateway does not serve (see admission.hostAllowed), before any origin
// or token check. Health checks are exempt: probes address pods and
// containers by whatever name their platform gives them.
func (g *Gateway) checkHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.admit.hostAllowed(r.Host) && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			g.metrics.HostsRefused.Inc()
			g.admit.hostRefused(r.Host)
			http.Error(w, "host not served by this gateway (see allowed_hosts)", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (g *Gateway) metricsHandler() http.Handler {
	return promhttp.HandlerFor(g.registry, promhttp.HandlerOpts{})
}

// securityHeaders: no MIME sniffing, and no Referer, since a wall
// screen's URL may carry its token (?token=).
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// staticHandler serves the embedded page with an ETag per file, so that a
// wall screen that reloads revalidates instead of downloading it again.
func staticHandler() http.Handler {
	files := web.Files()
	etags := map[string]string{}
	_ = fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags["/"+path] = `"` + hex.EncodeToString(sum[:8]) + `"`
		return nil
	})
	etags["/"] = etags["/index.html"]
	fileServer := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if etag, ok := etags[r.URL.Path]; ok {
			w.Header().Set("ETag", etag)
			w.Header().Set("Cache-Control", "no-cache")
		}
		fileServer.ServeHTTP(w, r)
	})
}

// admitClient runs the checks every client connection passes, whatever
// its transport, in this order: shutdown (503), origin (403), token
// (401), connection limits (503 for the gateway, 429 for the client's IP,
// both with Retry-After). Each refusal is answered and counted; ok is
// false then. An admitted client holds a connection slot of ip, which
// the caller releases when the client has gone.
func (g *Gateway) admitClient(w http.ResponseWriter, r *http.Request) (grant *auth.Grant, ip netip.Addr, ok bool) {
	refuse := func(reason string, status int, msg string) {
		g.metrics.ConnectionsRefused.WithLabelValues(reason).Inc()
		if status != http.StatusForbidden {
			w.Header().Set("Retry-After", "5")
		}
		http.Error(w, msg, status)
	}
	if g.draining.Load() {
		refuse("draining", http.StatusServiceUnavailable, "shutting down: reconnect to another replica")
		return nil, ip, false
	}
	if !g.admit.originAllowed(r) {
		refuse("origin", http.StatusForbidden, "origin not allowed (see allowed_origins)")
		return nil, ip, false
	}
	grant, err := g.admit.authenticate(r)
	if err != nil {
		g.unauthorized(w, err)
		return nil, ip, false
	}
	ip = g.admit.clientIP(r)
	switch g.takeSlot(ip) {
	case 0:
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		return nil, ip, false
	default:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "this gateway is full: try another replica later", http.StatusServiceUnavailable)
		return nil, ip, false
	}
	return grant, ip, true
}

// serveWS upgrades the request and starts the client's session, once
// admitClient has let it in.
func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	grant, ip, ok := g.admitClient(w, r)
	if !ok {
		return
	}
	conn, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		g.admit.release(ip)
		return // the upgrader has answered with the reason and counted it
	}
	logArgs := []any{"remote", r.RemoteAddr, "client_ip", ip}
	if grant != nil {
		logArgs = append(logArgs, "sub", grant.Subject)
	}
	scfg := g.sessCfg
	scfg.Compress = g.cfg.Compression.Enabled && offersDeflate(r)
	if scfg.Compress {
		_ = conn.SetCompressionLevel(g.cfg.Compression.Level)
	}
	s := ws.New(conn, g.clients, scfg, grant, g.metrics, g.log, logArgs...)
	// The session goes on without this goroutine: returning lets net/http
	// free the request's buffers, so an idle connection costs only its
	// own small state.
	if !g.track(s, func() {
		g.untrack(s)
		g.admit.release(ip)
	}) {
		// Shutdown began during the handshake.
		g.admit.release(ip)
		msg := websocket.FormatCloseMessage(protocol.CloseServiceRestart, "server shutting down")
		_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = conn.Close()
	}
}

// offersDeflate reports whether the client offered permessage-deflate,
// which is when gorilla (with EnableCompression) accepts it.
func offersDeflate(r *http.Request) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Extensions") {
		for _, ext := range strings.Split(h, ",") {
			name, _, _ := strings.Cut(ext, ";")
			if strings.EqualFold(strings.TrimSpace(name), "permessage-deflate") {
				return true
			}
		}
	}
	return false
}

// track registers a session so that Shutdown closes it and waits for it,
// and starts it. It refuses once shutdown has begun: Shutdown sets
// draining before it takes g.mu, so every session it does not see is
// refused here, and no conns.Add can race its conns.Wait. Starting under
// g.mu means Shutdown and Abort never see a session not yet started
// (Start only launches; the session's end, which takes g.mu in onDone,
// happens on other goroutines).
func (g *Gateway) track(s *ws.Session, onDone func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining.Load() {
		return false
	}
	g.conns.Add(1)
	g.sessions[s] = struct{}{}
	s.Start(onDone)
	return true
}

// serveSSE serves an event stream (package sse) once admitClient has let
// the client in; it returns when the stream has ended.
func (g *Gateway) serveSSE(w http.ResponseWriter, r *http.Request) {
	joins, err := sse.ParseQuery(r)
	if err != nil {
		g.metrics.ConnectionsRefused.WithLabelValues("bad_handshake").Inc()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	grant, ip, ok := g.admitClient(w, r)
	if !ok {
		return
	}
	defer g.admit.release(ip)
	logArgs := []any{"remote", r.RemoteAddr, "client_ip", ip, "transport", "sse"}
	if grant != nil {
		logArgs = append(logArgs, "sub", grant.Subject)
	}
	var cg client.Grant
	if grant != nil {
		cg = grant
	}
	g.mu.Lock()
	if g.draining.Load() { // Shutdown began since admitClient: it would not see the stream
		g.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "shutting down: reconnect to another replica", http.StatusServiceUnavailable)
		return
	}
	st := sse.New(g.clients, g.sseCfg, cg, g.metrics, g.log, logArgs...)
	g.conns.Add(1)
	g.sessions[st] = struct{}{}
	g.mu.Unlock()
	defer g.untrack(st)
	st.Serve(w, r, joins)
}

func (g *Gateway) untrack(s clientConn) {
	g.mu.Lock()
	delete(g.sessions, s)
	g.mu.Unlock()
	g.conns.Done()
}

type roomsResponse struct {
	Rooms []catalog.Entry `json:"rooms"`
	// The dashboard's title and named screens (dashboard.title,
	// dashboard.screens, then screens stored in the catalogue bucket).
	Title   catalog.Text     `json:"title,omitempty"`
	Screens []catalog.Screen `json:"screens,omitempty"`
}

// serveRooms lists the catalogue. The ETag is a hash of the body, so it is
// the same on every replica for the same catalogue and dashboards behind a
// load balancer can poll cheaply with If-None-Match.
//
// With auth on it needs a token like the WebSocket does, and lists only the
// rooms the token grants.
func (g *Gateway) serveRooms(w http.ResponseWriter, r *http.Request) {
	grant, err := g.admit.authenticate(r)
	if err != nil {
		g.unauthorized(w, err)
		return
	}
	all, _ := g.catalog.List()
	entries := all[:0:0]
	for _, e := range all {
		if grant.Allows(e.Room) {
			entries = append(entries, e)
		}
	}
	screens := g.cfg.Dashboard.CatalogScreens()
	configured := make(map[string]bool, len(screens))
	for _, s := range screens {
		configured[s.Name] = true
	}
	for _, s := range g.catalog.Screens() {
		if !configured[s.Name] {
			screens = append(screens, s)
		}
	}
	body, err := json.Marshal(roomsResponse{Rooms: entries, Title: g.cfg.Dashboard.TitleText(), Screens: screens})
	if err != nil {
		http.Error(w, "encoding the catalogue failed", http.StatusInternalServerError)
		return
	}
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(append(body, '\n'))
}
