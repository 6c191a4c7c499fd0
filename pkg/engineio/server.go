package engineio

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/roomcast/roomcast/pkg/wsread"
)

// Config tunes a Server.
type Config struct {
	// PingInterval is the time between server pings; PingTimeout is how
	// long a pong may take after its ping. Both are announced in the
	// handshake.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// MaxPayload is the largest request body (long-polling) or WebSocket
	// message the server reads, announced in the handshake.
	MaxPayload int
	// Admit, if set, is asked before a session opens: a non-zero status
	// refuses it (503 when the gateway is full, 429 for too many sessions
	// from one address: the gateway keeps every such count); the slot's
	// Release is called once when the session ends.
	Admit func(r *http.Request) (slot Slot, status int)
	// WriteTimeout bounds writing one response or WebSocket frame.
	WriteTimeout time.Duration
	// CheckOrigin decides whether a browser request with an Origin header
	// may open or use a session; nil allows the gateway's own origin only.
	// Allowed cross-origin requests get CORS headers.
	CheckOrigin func(r *http.Request) bool
	// Open is called for each new session before its handshake is sent,
	// and returns the session's handler. Required.
	Open func(c *Conn) Handler
	// FrameGap, if positive, keeps at least this long between two
	// WebSocket frames of a session. Only the conformance mode sets it: the
	// official test suites' client (ws 8.5 with listeners attached one
	// message at a time) loses a message that arrives in the same read as
	// the one before.
	FrameGap time.Duration
	// Poller, if set, watches the WebSockets' sockets, so that an idle
	// WebSocket session holds no goroutine; nil (or a socket it cannot
	// watch, such as TLS) gives each WebSocket a reader goroutine.
	Poller *wsread.Poller
	// Log receives debug lines about sessions; nil discards.
	Log *slog.Logger
}

// Slot is what Config.Admit gave a session; the layer above may look at
// it (Conn.Slot) to change it, e.g. when the session authenticates.
type Slot interface {
	Release()
}

// Handler is the layer above a session (see the package documentation for
// when each method is called).
type Handler interface {
	// Message handles one message packet from the client. An error means
	// the packet is malformed: the session is closed.
	Message(data []byte, binary bool) error
	// Closed is called once, when the session has ended.
	Closed(reason string)
	// Ready is signalled when the handler has packets for Take; nil if it
	// never has any, or if it calls Conn.Wake instead. A WebSocket session
	// whose handler has a Ready channel needs a goroutine to wait on it;
	// one that calls Wake needs none.
	Ready() <-chan struct{}
	// Take appends the handler's waiting packets to dst.
	Take(dst []Packet) []Packet
}

// maxQueued bounds the packets waiting in a session's own queue (pings,
// and what Conn.Send was given); a client that lets more pile up is
// closed. The handler's queue, read through Take, has its own bound.
const maxQueued = 1024

// closeGrace bounds the close frame of a WebSocket being closed.
const closeGrace = time.Second

// Engine.IO error codes, answered as {"code":N,"message":...} with 400.
const (
	codeUnknownTransport = 0
	codeUnknownSID       = 1
	codeBadHandshake     = 2
	codeBadRequest       = 3
	codeForbidden        = 4
	codeBadVersion       = 5
)

var errorMessages = map[int]string{
	codeUnknownTransport: "Transport unknown",
	codeUnknownSID:       "Session ID unknown",
	codeBadHandshake:     "Bad handshake method",
	codeBadRequest:       "Bad request",
	codeForbidden:        "Forbidden",
	codeBadVersion:       "Unsupported protocol version",
}

// Server serves Engine.IO sessions. It is an http.Handler for the
// endpoint's path (for example /socket.io/).
type Server struct {
	cfg  Config
	log  *slog.Logger
	open []byte // the handshake JSON without the sid

	mu       sync.Mutex
	sessions map[string]*Conn
	closed   bool
	wg       sync.WaitGroup // requests in progress and session goroutines
}

// NewServer returns a server; cfg.Open is required.
func NewServer(cfg Config) *Server {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		sessions: make(map[string]*Conn),
	}
	return s
}

// handshake returns the open packet's JSON for a new session.
func (s *Server) handshake(sid string, upgrades []string) []byte {
	b, _ := json.Marshal(struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int      `json:"maxPayload"`
	}{sid, upgrades, s.cfg.PingInterval.Milliseconds(), s.cfg.PingTimeout.Milliseconds(), s.cfg.MaxPayload})
	return b
}

// ServeHTTP dispatches a request: a handshake without sid, a poll (GET), a
// POST of packets, or a WebSocket (new, or an upgrade with sid).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "shutting down: reconnect to another replica", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()

	if !s.origin(w, r) {
		writeError(w, http.StatusForbidden, codeForbidden)
		return
	}
	if r.Method == http.MethodOptions { // CORS preflight
		w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
		if h := r.Header.Get("Access-Control-Request-Headers"); h != "" {
			w.Header().Set("Access-Control-Allow-Headers", h)
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	q := r.URL.Query()
	transport := q.Get("transport")
	if transport != "polling" && transport != "websocket" {
		writeError(w, http.StatusBadRequest, codeUnknownTransport)
		return
	}
	if q.Get("EIO") != "4" {
		writeError(w, http.StatusBadRequest, codeBadVersion)
		return
	}
	sid := q.Get("sid")
	if sid == "" {
		if r.Method != http.MethodGet {
			writeError(w, http.StatusBadRequest, codeBadHandshake)
			return
		}
		if transport == "websocket" {
			s.serveNewWebSocket(w, r)
		} else {
			s.serveHandshake(w, r)
		}
		return
	}
	c := s.lookup(sid)
	if c == nil {
		writeError(w, http.StatusBadRequest, codeUnknownSID)
		return
	}
	switch {
	case transport == "websocket" && r.Method == http.MethodGet:
		c.serveUpgrade(w, r)
	case transport == "polling" && r.Method == http.MethodGet:
		c.servePoll(w, r)
	case transport == "polling" && r.Method == http.MethodPost:
		c.servePost(w, r)
	default:
		writeError(w, http.StatusBadRequest, codeBadRequest)
	}
}

// enter counts a request in, unless shutdown has begun. Shutdown sets
// closed under mu before it waits, so no Add can race its Wait.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// origin applies the origin policy and, for an allowed cross-origin
// request, sets the CORS headers.
func (s *Server) origin(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser, or a same-origin GET
	}
	ok := false
	if s.cfg.CheckOrigin != nil {
		ok = s.cfg.CheckOrigin(r)
	} else if u, err := url.Parse(origin); err == nil {
		ok = strings.EqualFold(u.Host, r.Host)
	}
	if ok {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		w.Header().Add("Vary", "Origin")
	}
	return ok
}

func (s *Server) serveHandshake(w http.ResponseWriter, r *http.Request) {
	c, status := s.newConn(r, false)
	if c == nil {
		writeError(w, status, codeBadRequest)
		return
	}
	// The handshake answers the first GET; the session's own queue then
	// starts empty, so the next poll waits for the first ping.
	body := append([]byte{Open}, s.handshake(c.id, []string{"websocket"})...)
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	_, _ = w.Write(body)
}

// newConn registers a session (its heartbeat timer runs from now). It returns nil and
// an HTTP status when the session is refused.
func (s *Server) newConn(r *http.Request, ws bool) (*Conn, int) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, http.StatusServiceUnavailable
	}
	var slot Slot
	if s.cfg.Admit != nil {
		var status int
		if slot, status = s.cfg.Admit(r); status != 0 {
			s.mu.Unlock()
			return nil, status
		}
	}
	c := newConn(s, NewID(), r, ws)
	c.slot = slot
	s.sessions[c.id] = c
	s.wg.Add(1)
	s.mu.Unlock()

	c.h = s.cfg.Open(c)
	c.mu.Lock()
	c.opened = true
	closed := c.closed // ended (Shutdown, say) while Open ran: end could not call Closed
	c.mu.Unlock()
	if closed {
		go c.closeHandler()
	}
	return c, 0
}

func (s *Server) lookup(sid string) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[sid]
}

func (s *Server) remove(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[c.id] != c {
		return
	}
	delete(s.sessions, c.id)
	if c.slot != nil {
		c.slot.Release()
	}
}

// Len returns the number of open sessions.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Shutdown refuses new requests, closes every session (a WebSocket with
// code, a waiting poll with a close packet) and waits until all the
// server's goroutines and requests have ended, or ctx ends.
func (s *Server) Shutdown(ctx context.Context, code int, reason string) error {
	for _, c := range s.stop() {
		c.close(Close, code, reason)
	}
	return s.Wait(ctx)
}

// Stop refuses new sessions and returns the open ones, for a caller that
// closes them itself (a drain spread over time); then Wait.
func (s *Server) Stop() []*Conn { return s.stop() }

// Wait waits for every session's goroutines to end, or until ctx ends.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Abort drops every session at once, without close packets or frames, as
// a crash would, and waits for the goroutines to end.
func (s *Server) Abort() {
	for _, c := range s.stop() {
		c.abort()
	}
	s.wg.Wait()
}

func (s *Server) stop() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	conns := make([]*Conn, 0, len(s.sessions))
	for _, c := range s.sessions {
		conns = append(conns, c)
	}
	return conns
}

func writeError(w http.ResponseWriter, status, code int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, errorMessages[code]})
	_, _ = w.Write(b)
}

// NewID returns a random id of 120 bits, URL-safe: Engine.IO session ids,
// and Socket.IO's namespace connection ids.
func NewID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

var errClosed = errors.New("engineio: session closed")
