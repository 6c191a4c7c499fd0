package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
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
	allowed    map[string]bool // lower-case scheme://host[:port]; "*" allows all
	hosts      map[string]bool // lower-case host names served; "*" serves all
	trusted    []netip.Prefix
	hops       int // X-Forwarded-For entries appended by trusted proxies
	ipv6Prefix int
	auth       *auth.Authenticator // nil: auth.mode none
	slots      *slots              // connection slots, keyed by key(ip)
	log        *slog.Logger

	hostsLogged sync.Map // host -> struct{}: a refused host is logged once
	nLogged     atomic.Int32
}

// maxHostsLogged bounds the refused hosts remembered for logging, since
// a client can send any number of different Host headers.
const maxHostsLogged = 100

func newAdmission(cfg config.Config, maxConns int, log *slog.Logger) (*admission, error) {
	a := &admission{
		allowed:    map[string]bool{},
		hosts:      map[string]bool{"localhost": true},
		hops:       max(cfg.TrustedHops, 1),
		ipv6Prefix: cfg.Limits.IPv6Prefix,
		slots:      newSlots(maxConns, cfg.Limits.MaxConnectionsPerIP),
		log:        log,
	}
	for _, o := range cfg.AllowedOrigins {
		a.allowed[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
		if u, err := url.Parse(o); err == nil && u.Hostname() != "" {
			a.hosts[strings.ToLower(u.Hostname())] = true
		}
	}
	for _, h := range cfg.AllowedHosts {
		a.hosts[strings.ToLower(strings.TrimSuffix(h, "."))] = true
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

// hostAllowed is the DNS rebinding defence: a page on a domain the
// attacker rebinds to the gateway's address sends that domain as Host
// (and as its Origin, which then passes the same-origin check). The
// gateway serves only hosts it knows: localhost, IP literals (a page
// loaded from an IP address cannot be rebound), allowed_hosts and the
// hosts of allowed_origins. A request without Host (HTTP/1.0 health
// checks) comes from no browser and is served.
func (a *admission) hostAllowed(hostport string) bool {
	if hostport == "" || a.hosts["*"] {
		return true
	}
	host := hostName(hostport)
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return a.hosts[host] || strings.HasSuffix(host, ".localhost")
}

// hostName is a Host header's name as allowed_hosts lists it: without
// the port or brackets, lower case, no trailing dot.
func hostName(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
}

// hostRefused logs a refused host the first time it is seen (up to
// maxHostsLogged of them), naming the key that would serve it. The host
// is remembered by name, as allowed_hosts takes it, so the same name on
// another port or in other case is not logged again.
func (a *admission) hostRefused(hostport string) {
	host := hostName(hostport)
	if a.nLogged.Load() >= maxHostsLogged {
		return
	}
	if _, seen := a.hostsLogged.LoadOrStore(host, struct{}{}); seen {
		return
	}
	if a.nLogged.Add(1) == maxHostsLogged {
		a.log.Warn("refused hosts: no more will be logged", "max", maxHostsLogged)
	}
	a.log.Warn("request refused: Host is not served by this gateway; if it is yours, add it to allowed_hosts (ROOMCAST_ALLOWED_HOSTS)", "host", host)
}

// clientIP is the address a connection is counted against: the peer, or,
// when the peer is a trusted proxy, the X-Forwarded-For entry that
// trusted_hops proxies ago was the client: the proxies are trusted by
// their position in the chain, never by what an address looks like, so a
// client in a private range that writes its own X-Forwarded-For is still
// counted by its real address. Forwarded headers from anyone else are
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
	hop, err := netip.ParseAddr(strings.TrimSpace(hops[max(len(hops)-a.hops, 0)]))
	if err != nil {
		return ip // no header, or a garbled one: count the proxy itself
	}
	return hop.Unmap()
}

// key is what limits count per client: the address, or for IPv6 its
// network of limits.ipv6_prefix bits, since one host commonly holds a
// whole /64.
func (a *admission) key(ip netip.Addr) netip.Addr {
	if !ip.Is6() || a.ipv6Prefix >= 128 {
		return ip
	}
	p, err := ip.Prefix(a.ipv6Prefix)
	if err != nil {
		return ip
	}
	return p.Addr()
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
	switch a.slots.take(a.key(ip), true) {
	case slotFull:
		return errGatewayFull
	case slotAddrFull:
		return errIPFull
	}
	return nil
}

func (a *admission) release(ip netip.Addr) { a.slots.release(a.key(ip), true) }

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
