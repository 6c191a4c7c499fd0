package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomcast/roomcast/pkg/auth"
	"github.com/roomcast/roomcast/pkg/config"
)

// admission decides, before the WebSocket upgrade, whether a handshake may
// proceed: origin, token, and the connection limits. Everything refused
// here costs no goroutine beyond net/http's and no upgrade.
type admission struct {
	allowed  map[string]bool // lower-case scheme://host[:port]; "*" allows all
	trusted  []netip.Prefix
	auth     *auth.Authenticator // nil: auth.mode none
	maxConns int
	maxPerIP int

	mu    sync.Mutex // guards total and perIP
	total int
	perIP map[netip.Addr]int
}

func newAdmission(cfg config.Config) (*admission, error) {
	a := &admission{
		allowed:  map[string]bool{},
		maxConns: cfg.Limits.MaxConnections,
		maxPerIP: cfg.Limits.MaxConnectionsPerIP,
		perIP:    map[netip.Addr]int{},
	}
	for _, o := range cfg.AllowedOrigins {
		a.allowed[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	for _, p := range cfg.TrustedProxies {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, err := netip.ParseAddr(p)
			if err != nil {
				return nil, fmt.Errorf("trusted_proxies: %q: %w", p, err)
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		a.trusted = append(a.trusted, prefix.Masked())
	}
	if cfg.Auth.Mode == "jwt" {
		var err error
		if a.auth, err = newAuthenticator(cfg.Auth); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// newAuthenticator reads the key the configuration names.
func newAuthenticator(c config.Auth) (*auth.Authenticator, error) {
	opts := auth.Options{
		Issuer: c.JWT.Issuer, Audience: c.JWT.Audience, Leeway: c.JWT.Leeway,
		Roles: c.Roles, Cookie: c.Cookie, Secret: []byte(c.JWT.Secret),
	}
	key := "auth.jwt.secret"
	switch {
	case c.JWT.SecretFile != "":
		key = "auth.jwt.secret_file"
		b, err := os.ReadFile(c.JWT.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		opts.Secret = []byte(strings.TrimSpace(string(b)))
	case c.JWT.PublicKeyFile != "":
		key = "auth.jwt.public_key_file"
		b, err := os.ReadFile(c.JWT.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if opts.PublicKey, err = auth.ParsePublicKey(b); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", key, c.JWT.PublicKeyFile, err)
		}
		opts.Secret = nil
	}
	a, err := auth.New(opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return a, nil
}

// originAllowed is the cross-site WebSocket hijacking defence: a browser
// sends the page's origin, and a page from another site must not open a
// socket with the user's cookies. Its own origin (the Origin's host equal
// to the Host header) and the allowed_origins are accepted; requests
// without an Origin header come from non-browser clients, which carry
// their own credentials.
func (a *admission) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || a.allowed["*"] {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host) || a.allowed[strings.ToLower(u.Scheme+"://"+u.Host)]
}

// clientIP is the address a connection is counted against: the peer, or,
// when the peer is a trusted proxy, the last X-Forwarded-For address that
// is not itself a trusted proxy. Forwarded headers from anyone else are
// ignored, since a client can write whatever it likes there.
func (a *admission) clientIP(r *http.Request) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	ip := peer.Addr().Unmap()
	if !a.isTrusted(ip) {
		return ip
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return ip // a garbled chain: count the proxy itself
		}
		hop = hop.Unmap()
		if !a.isTrusted(hop) {
			return hop
		}
		ip = hop
	}
	return ip
}

func (a *admission) isTrusted(ip netip.Addr) bool {
	for _, p := range a.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Refusals by the connection limits.
var (
	errGatewayFull = errors.New("max_connections")
	errIPFull      = errors.New("max_connections_per_ip")
)

// acquire takes a connection slot for ip; release gives it back.
func (a *admission) acquire(ip netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.total >= a.maxConns {
		return errGatewayFull
	}
	if a.perIP[ip] >= a.maxPerIP {
		return errIPFull
	}
	a.total++
	a.perIP[ip]++
	return nil
}

func (a *admission) release(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if n := a.perIP[ip] - 1; n > 0 {
		a.perIP[ip] = n
	} else {
		delete(a.perIP, ip)
	}
}

// authenticate returns the request's grant: nil (everything) without
// auth, else the token's, or an error to answer with 401.
func (a *admission) authenticate(r *http.Request) (*auth.Grant, error) {
	if a.auth == nil {
		return nil, nil
	}
	return a.auth.Authenticate(r)
}

// unauthorized answers 401 with the reason, in the body and in the
// WWW-Authenticate header (RFC 6750), and counts it.
func (g *Gateway) unauthorized(w http.ResponseWriter, err error) {
	reason, detail := g.authFailed(err), err.Error()
	code := "invalid_token"
	if reason == auth.ReasonMissing {
		code = "invalid_request"
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="roomcast", error=%q, error_description=%q`, code, reason))
	http.Error(w, detail, http.StatusUnauthorized)
}

// authFailed counts a refused token and returns the reason.
func (g *Gateway) authFailed(err error) string {
	reason := auth.ReasonMalformed
	var ae *auth.Error
	if errors.As(err, &ae) {
		reason = ae.Reason
	}
	g.metrics.AuthFailures.WithLabelValues(reason).Inc()
	return reason
}

// takeSlot takes a connection slot for ip (a WebSocket or a Socket.IO
// session), or counts the refusal and returns its HTTP status: 503 when
// the gateway is full, 429 when ip has too many.
func (g *Gateway) takeSlot(ip netip.Addr) int {
	err := g.admit.acquire(ip)
	if err == nil {
		return 0
	}
	g.metrics.ConnectionsRefused.WithLabelValues(err.Error()).Inc()
	if errors.Is(err, errIPFull) {
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable
}

// serverTLS loads the gateway's certificate. HTTP/2 is not offered: the
// WebSocket upgrade needs HTTP/1.1, and a browser that negotiated h2 for
// the page could otherwise try a WebSocket over h2 that is not served.
func serverTLS(c config.TLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file, tls.key_file: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

// unserved counts TCP connections that closed before any request reached
// a handler: the handshake_timeout ran out (a stalled or slowloris client),
// the header block was too large or not HTTP, or the client gave up. It
// hooks http.Server's ConnContext and ConnState.
type unserved struct {
	conns   sync.Map // net.Conn -> *atomic.Bool (a request reached a handler)
	counter prometheus.Counter
}

type servedKey struct{}

func (u *unserved) connContext(ctx context.Context, c net.Conn) context.Context {
	served := new(atomic.Bool)
	u.conns.Store(c, served)
	return context.WithValue(ctx, servedKey{}, served)
}

func (u *unserved) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateHijacked:
		u.conns.Delete(c)
	case http.StateClosed:
		if served, ok := u.conns.LoadAndDelete(c); ok && !served.(*atomic.Bool).Load() {
			u.counter.Inc()
		}
	}
}

// handler marks the connection as served before h runs.
func (u *unserved) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served, ok := r.Context().Value(servedKey{}).(*atomic.Bool); ok {
			served.Store(true)
		}
		h.ServeHTTP(w, r)
	})
}
