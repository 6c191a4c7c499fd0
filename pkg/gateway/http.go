package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/protocol"
	"github.com/roomcast/roomcast/pkg/session"
	"github.com/roomcast/roomcast/pkg/web"
)

func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /", staticHandler())
	mux.HandleFunc("GET /ws", g.serveWS)
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.registry, promhttp.HandlerOpts{}))
	return g.withSocketIO(mux)
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

// serveWS upgrades the request and runs the client's session on this
// goroutine until the connection ends.
func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		http.Error(w, "shutting down: reconnect to another replica", http.StatusServiceUnavailable)
		return
	}
	conn, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with the reason
	}
	s := session.New(conn, g.hub, g.sessCfg, g.metrics, g.log.With("remote", r.RemoteAddr))
	if !g.track(s) {
		// Shutdown began during the handshake.
		msg := websocket.FormatCloseMessage(protocol.CloseServiceRestart, "server shutting down")
		_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = conn.Close()
		return
	}
	defer g.untrack(s)
	s.Serve(r.Context())
}

// track registers a session so that Shutdown closes it and waits for it.
// It refuses once shutdown has begun: Shutdown sets draining before it
// takes g.mu, so every session it does not see is refused here, and no
// conns.Add can race its conns.Wait.
func (g *Gateway) track(s *session.Session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining.Load() {
		return false
	}
	g.conns.Add(1)
	g.sessions[s] = struct{}{}
	return true
}

func (g *Gateway) untrack(s *session.Session) {
	g.mu.Lock()
	delete(g.sessions, s)
	g.mu.Unlock()
	g.conns.Done()
}

type roomsResponse struct {
	Rooms []catalog.Entry `json:"rooms"`
}

// serveRooms lists the catalogue. The ETag is a hash of the body, so it is
// the same on every replica for the same catalogue and dashboards behind a
// load balancer can poll cheaply with If-None-Match.
func (g *Gateway) serveRooms(w http.ResponseWriter, r *http.Request) {
	entries, _ := g.catalog.List()
	body, err := json.Marshal(roomsResponse{Rooms: entries})
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

// originChecker returns the upgrader's origin policy. With no allowed
// origins it is gorilla's same-origin check: a browser page from another
// site cannot open a socket with the user's cookies. The listed origins are
// allowed in addition to the gateway's own, so that its own dashboard
// keeps working.
func originChecker(allowed []string) func(*http.Request) bool {
	if len(allowed) == 0 {
		return nil
	}
	set := make(map[string]bool, len(allowed))
	for _, o := range allowed {
		set[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" || set["*"] {
			return true
		}
		u, err := url.Parse(origin)
		if err != nil {
			return false
		}
		return strings.EqualFold(u.Host, r.Host) || set[strings.ToLower(u.Scheme+"://"+u.Host)]
	}
}
