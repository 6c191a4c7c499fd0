package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/roomcast/roomcast/pkg/auth"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Validate checks every value. The error lists each problem as
// "key: problem".
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, a...)...))
	}
	check := func(key string, err error) {
		if err != nil {
			bad(key, "%v", err)
		}
	}

	check("listen", checkAddr(c.Listen))
	if c.MetricsListen != "" {
		check("metrics_listen", checkAddr(c.MetricsListen))
	}
	for i, o := range c.AllowedOrigins {
		check(fmt.Sprintf("allowed_origins[%d]", i), checkOrigin(o))
	}
	for i, h := range c.AllowedHosts {
		check(fmt.Sprintf("allowed_hosts[%d]", i), checkHost(h))
	}
	for i, p := range c.TrustedProxies {
		check(fmt.Sprintf("trusted_proxies[%d]", i), checkCIDR(p))
	}
	if c.TrustedHops < 1 || c.TrustedHops > 10 {
		bad("trusted_hops", "must be 1 to 10 (the proxies in front of the gateway that append to X-Forwarded-For), got %d", c.TrustedHops)
	}
	c.validateSecurity(bad)
	for key, d := range map[string]time.Duration{
		"ping_interval": c.PingInterval, "pong_timeout": c.PongTimeout,
		"write_timeout": c.WriteTimeout, "handshake_timeout": c.HandshakeTimeout,
		"shutdown_timeout": c.ShutdownTimeout, "idle_timeout": c.IdleTimeout,
	} {
		if d <= 0 {
			bad(key, "must be a positive duration such as 10s, got %v", d)
		}
	}

	if c.DrainWindow < 0 || c.DrainWindow >= c.ShutdownTimeout {
		bad("drain_window", "must be at least 0 and shorter than shutdown_timeout (%v), got %v", c.ShutdownTimeout, c.DrainWindow)
	}
	if c.RoomLinger < 0 || c.RoomLinger > time.Minute {
		bad("room_linger", "must be between 0 and 1m, got %v", c.RoomLinger)
	}
	if c.History.Enabled {
		if !validBucket(c.History.Stream) {
			bad("history.stream", "must be letters, digits, '-' and '_', got %q", c.History.Stream)
		}
		if err := protocol.CheckSubjectPrefix(c.History.LivePrefix); err != nil {
			bad("history.live_prefix", "%v", err)
		} else if p, l := c.NATS.SubjectPrefix+".", c.History.LivePrefix+"."; strings.HasPrefix(l, p) || strings.HasPrefix(p, l) {
			bad("history.live_prefix", "%q overlaps nats.subject_prefix %q: the stream would capture its own republished updates", c.History.LivePrefix, c.NATS.SubjectPrefix)
		}
		if c.History.Depth < 1 || c.History.Depth > 100000 {
			bad("history.depth", "must be 1 to 100000, got %d", c.History.Depth)
		}
		if c.History.MaxAge <= 0 {
			bad("history.max_age", "must be a positive duration, got %v", c.History.MaxAge)
		}
		if c.History.Memory < 1 || c.History.Memory > 100000 {
			bad("history.memory", "must be 1 to 100000, got %d", c.History.Memory)
		}
		if c.History.MemoryBytes < c.Limits.MaxUpdateBytes {
			bad("history.memory_bytes", "must hold at least one update of limits.max_update_bytes (%d), got %d", c.Limits.MaxUpdateBytes, c.History.MemoryBytes)
		}
		if c.History.FetchTimeout < 10*time.Millisecond || c.History.FetchTimeout > time.Minute {
			bad("history.fetch_timeout", "must be 10ms to 1m, got %v", c.History.FetchTimeout)
		}
		if c.History.ResumesPerSecond <= 0 {
			bad("history.resumes_per_second", "must be positive, got %v", c.History.ResumesPerSecond)
		}
		if c.History.ResumeBurst < 1 {
			bad("history.resume_burst", "must be at least 1, got %d", c.History.ResumeBurst)
		}
		if c.History.Replicas < 1 || c.History.Replicas > 5 {
			bad("history.replicas", "must be 1 to 5, got %d", c.History.Replicas)
		}
	}
	if c.NATS.URL != "" {
		check("nats.url", checkNATSURLs(c.NATS.URL))
	} else {
		check("nats.embedded.listen", checkAddr(c.NATS.Embedded.Listen))
	}
	check("nats.subject_prefix", protocol.CheckSubjectPrefix(c.NATS.SubjectPrefix))
	check("nats.inbox_prefix", protocol.CheckSubjectPrefix(c.NATS.InboxPrefix))
	if !validBucket(c.NATS.CatalogBucket) {
		bad("nats.catalog_bucket", "must be letters, digits, '-' and '_', got %q", c.NATS.CatalogBucket)
	}

	positive := func(key string, n int) {
		if n <= 0 {
			bad(key, "must be positive, got %d", n)
		}
	}
	positive("limits.max_frame_bytes", c.Limits.MaxFrameBytes)
	positive("limits.max_rooms_per_connection", c.Limits.MaxRoomsPerConnection)
	positive("limits.command_burst", c.Limits.CommandBurst)
	positive("limits.max_update_bytes", c.Limits.MaxUpdateBytes)
	notNegative := func(key string, n int, zero string) {
		if n < 0 {
			bad(key, "must be 0 (%s) or positive, got %d", zero, n)
		}
	}
	notNegative("limits.max_connections", c.Limits.MaxConnections, "as many as the TCP budget allows")
	positive("limits.max_connections_per_ip", c.Limits.MaxConnectionsPerIP)
	notNegative("limits.max_tcp_connections", c.Limits.MaxTCPConnections, "the descriptor limit less limits.reserved_fds")
	positive("limits.max_tcp_connections_per_ip", c.Limits.MaxTCPConnectionsPerIP)
	if c.Limits.ReservedFDs < 32 {
		bad("limits.reserved_fds", "must be at least 32 (NATS, files and the metrics listener need descriptors too), got %d", c.Limits.ReservedFDs)
	}
	if t := c.Limits.MaxTCPConnections; t > 0 && c.Limits.MaxConnections > t {
		bad("limits.max_connections", "%d is more than limits.max_tcp_connections (%d): every WebSocket is a TCP connection", c.Limits.MaxConnections, t)
	}
	if p := c.Limits.IPv6Prefix; p < 32 || p > 128 {
		bad("limits.ipv6_prefix", "must be 32 to 128 (bits of an IPv6 address counted as one client), got %d", p)
	}
	if c.Limits.MaxHeaderBytes < 4096 || c.Limits.MaxHeaderBytes > 1<<20 {
		bad("limits.max_header_bytes", "must be 4096 to 1048576, got %d", c.Limits.MaxHeaderBytes)
	}
	if c.Limits.CommandsPerSecond <= 0 {
		bad("limits.commands_per_second", "must be positive, got %v", c.Limits.CommandsPerSecond)
	}
	positive("queue.conflate_after", c.Queue.ConflateAfter)
	positive("queue.max_messages", c.Queue.MaxMessages)
	positive("queue.max_bytes", c.Queue.MaxBytes)
	positive("queue.batch_bytes", c.Queue.BatchBytes)
	if c.Queue.Writer != "auto" && c.Queue.Writer != "goroutine" && c.Queue.Writer != "loop" {
		bad("queue.writer", "must be auto, goroutine or loop, got %q", c.Queue.Writer)
	}
	switch c.IO.URing {
	case "auto", "off":
	case "on":
		if c.Queue.Writer == "goroutine" {
			bad("io.uring", "on needs queue.writer auto or loop (only the event-loop writer uses io_uring), got queue.writer %q", c.Queue.Writer)
		}
		if c.TLS.CertFile != "" {
			bad("io.uring", "on needs plain sockets: with tls.cert_file the gateway writes through crypto/tls")
		}
	default:
		bad("io.uring", "must be auto, on or off, got %q", c.IO.URing)
	}
	if c.Queue.CoalesceDelay < 0 || c.Queue.CoalesceDelay > 100*time.Millisecond {
		bad("queue.coalesce_delay", "must be 0 to 100ms, got %v", c.Queue.CoalesceDelay)
	}
	if c.Queue.MaxMessages <= c.Queue.ConflateAfter {
		bad("queue.max_messages", "must be larger than queue.conflate_after (%d), got %d", c.Queue.ConflateAfter, c.Queue.MaxMessages)
	}
	if c.Queue.MaxBytes < 4*c.Limits.MaxUpdateBytes {
		bad("queue.max_bytes", "must hold at least 4 updates of limits.max_update_bytes (%d), got %d", 4*c.Limits.MaxUpdateBytes, c.Queue.MaxBytes)
	}

	if c.Compression.MinBytes < 0 {
		bad("compression.min_bytes", "must not be negative, got %d", c.Compression.MinBytes)
	}
	if c.Compression.Level < 1 || c.Compression.Level > 9 {
		bad("compression.level", "must be 1 (fastest) to 9 (smallest), got %d", c.Compression.Level)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}

	if c.NATS.CatalogExpireAfter < 0 {
		bad("nats.catalog_expire_after", "must be 0 (never) or a positive duration, got %v", c.NATS.CatalogExpireAfter)
	} else if c.NATS.CatalogExpireAfter > 0 && c.NATS.CatalogExpireAfter < 2*c.Producer.AnnounceInterval {
		bad("nats.catalog_expire_after", "%v is less than two producer.announce_interval (%v): live rooms would flicker out", c.NATS.CatalogExpireAfter, c.Producer.AnnounceInterval)
	}
	if t, err := textOf(c.Dashboard.Title); err != nil {
		bad("dashboard.title", "%v", err)
	} else if e := (catalog.Entry{Room: "x", Title: t}); len(t) > 0 {
		if err := e.Validate(); err != nil {
			bad("dashboard.title", "%v", err)
		}
	}
	screens := map[string]bool{}
	for i, s := range c.Dashboard.Screens {
		key := fmt.Sprintf("dashboard.screens[%d]", i)
		t, err := textOf(s.Title)
		if err != nil {
			bad(key+".title", "%v", err)
			continue
		}
		sc := catalog.Screen{Name: s.Name, Title: t, Columns: s.Columns, Panels: s.Panels}
		if err := sc.Validate(); err != nil {
			bad(key, "%v", err)
		} else if screens[s.Name] {
			bad(key+".name", "screen %q is defined twice", s.Name)
		}
		screens[s.Name] = true
	}
	if c.Producer.AnnounceInterval <= 0 {
		bad("producer.announce_interval", "must be a positive duration, got %v", c.Producer.AnnounceInterval)
	}
	seen := map[string]bool{}
	for i, r := range c.Producer.Rooms {
		key := fmt.Sprintf("producer.rooms[%d]", i)
		if err := protocol.CheckRoom(r.Room); err != nil {
			bad(key+".room", "%v", err)
		} else if seen[r.Room] {
			bad(key+".room", "room %q is defined twice", r.Room)
		}
		seen[r.Room] = true
		if r.Interval < 10*time.Millisecond {
			bad(key+".interval", "must be at least 10ms, got %v", r.Interval)
		}
		switch {
		case r.Generator == GeneratorSalesDay || r.Generator == GeneratorVisitorsDay:
			if len(r.Metrics) > 0 {
				bad(key+".metrics", "a room with generator %s makes its own metrics; remove metrics", r.Generator)
			}
		case r.Generator != "":
			bad(key+".generator", "must be %s or %s (or unset, with metrics), got %q", GeneratorSalesDay, GeneratorVisitorsDay, r.Generator)
		case len(r.Metrics) == 0:
			bad(key+".metrics", "a room needs at least one metric")
		}
		keys := map[string]bool{}
		for j, m := range r.Metrics {
			mkey := fmt.Sprintf("%s.metrics[%d]", key, j)
			switch {
			case m.Key == "":
				bad(mkey+".key", "required")
			case m.Key == "ts" || m.Key == "timestamp":
				bad(mkey+".key", "%q is reserved for the update time", m.Key)
			case keys[m.Key]:
				bad(mkey+".key", "%q is defined twice", m.Key)
			}
			keys[m.Key] = true
			switch m.Generator {
			case "uniform", "walk":
			default:
				bad(mkey+".generator", "must be uniform or walk, got %q", m.Generator)
			}
			if m.Min > m.Max {
				bad(mkey+".min", "%v is larger than max %v", m.Min, m.Max)
			}
			if m.Step < 0 {
				bad(mkey+".step", "must not be negative")
			}
			if m.Decimals < 0 || m.Decimals > 9 {
				bad(mkey+".decimals", "must be 0 to 9, got %d", m.Decimals)
			}
		}
		if entry := r.Entry(); len(r.Metrics) > 0 {
			if err := entry.Validate(); err != nil {
				bad(key, "catalogue entry: %v", err)
			}
		}
	}
	if c.SocketIO.Enabled {
		if c.SocketIO.PingInterval < 10*time.Millisecond {
			bad("socketio.ping_interval", "must be at least 10ms, got %v", c.SocketIO.PingInterval)
		}
		if c.SocketIO.PingTimeout < 10*time.Millisecond {
			bad("socketio.ping_timeout", "must be at least 10ms, got %v", c.SocketIO.PingTimeout)
		}
		if c.SocketIO.MaxPayload < 1024 || c.SocketIO.MaxPayload > 10<<20 {
			bad("socketio.max_payload", "must be 1024 to 10485760 bytes, got %d", c.SocketIO.MaxPayload)
		}
		positive("socketio.pending_sessions", c.SocketIO.PendingSessions)
		positive("socketio.pending_sessions_per_ip", c.SocketIO.PendingSessionsPerIP)
		if c.SocketIO.ConnectTimeout <= 0 || c.SocketIO.ConnectTimeout > time.Minute {
			bad("socketio.connect_timeout", "must be a positive duration up to 1m, got %v", c.SocketIO.ConnectTimeout)
		}
		if c.SocketIO.MaxSessionsPerIP < 0 {
			bad("socketio.max_sessions_per_ip", "must be 0 (no limit) or positive, got %d", c.SocketIO.MaxSessionsPerIP)
		}
	}
	return errors.Join(errs...)
}

// validateSecurity checks auth, tls and the NATS credentials. Files are
// read when the gateway starts, which names the key if one is unusable.
func (c *Config) validateSecurity(bad func(key, format string, a ...any)) {
	switch c.Auth.Mode {
	case "none":
	case "jwt":
		j := c.Auth.JWT
		set := 0
		for _, v := range []string{j.Secret, j.SecretFile, j.PublicKeyFile} {
			if v != "" {
				set++
			}
		}
		if set != 1 {
			bad("auth.jwt", "with auth.mode jwt set exactly one of secret, secret_file and public_key_file (%d set)", set)
		}
		if j.Secret != "" && len(j.Secret) < 32 {
			bad("auth.jwt.secret", "must be at least 32 bytes (HS256 with a short secret can be brute-forced), got %d", len(j.Secret))
		}
	default:
		bad("auth.mode", "must be none or jwt, got %q", c.Auth.Mode)
	}
	if c.Auth.JWT.Leeway < 0 || c.Auth.JWT.Leeway > 5*time.Minute {
		bad("auth.jwt.leeway", "must be 0 to 5m, got %v", c.Auth.JWT.Leeway)
	}
	if ck := c.Auth.Cookie; ck != "" && strings.ContainsAny(ck, " \t;=,\"()<>@:/[]?{}") {
		bad("auth.cookie", "%q is not a valid cookie name", ck)
	}
	for role, list := range c.Auth.Roles {
		if _, err := auth.ParsePatterns(list); err != nil {
			bad("auth.roles."+role, "%v", err)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "set both cert_file and key_file, or neither")
	}

	n := c.NATS
	kinds := 0
	for _, v := range []string{n.User, n.Token, n.NKeySeedFile, n.CredsFile} {
		if v != "" {
			kinds++
		}
	}
	if kinds > 1 {
		bad("nats", "set at most one of user (with password), token, nkey_seed_file and creds_file")
	}
	if n.Password != "" && n.User == "" {
		bad("nats.password", "needs nats.user")
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		bad("nats.tls", "set both cert_file and key_file (a client certificate), or neither")
	}
	if pw := n.Embedded.ProducerPassword; pw != "" {
		switch {
		case n.URL != "":
			bad("nats.embedded.producer_password", "is for the embedded server; with nats.url set it has no effect: remove it")
		case len(pw) < 16:
			bad("nats.embedded.producer_password", "must be at least 16 characters, got %d", len(pw))
		}
	}
	if n.URL == "" && (kinds > 0 || n.TLS.CAFile != "" || n.TLS.CertFile != "") {
		bad("nats", "credentials and TLS are for an external NATS (nats.url); the embedded server runs in-process")
	}
}

func checkCIDR(s string) error {
	if _, _, err := net.ParseCIDR(s); err == nil {
		return nil
	}
	if net.ParseIP(s) != nil {
		return nil
	}
	return fmt.Errorf("want a network such as 10.0.0.0/8 or an address, got %q", s)
}

// checkHost accepts a host name or IP literal without scheme or port, or
// "*".
func checkHost(h string) error {
	if h == "*" || net.ParseIP(strings.Trim(h, "[]")) != nil {
		return nil
	}
	if h == "" || len(h) > 253 || strings.ContainsAny(h, ":/ @*") {
		return fmt.Errorf("want a host name such as dash.example.com (no scheme or port), got %q", h)
	}
	return nil
}

// checkAddr accepts host:port with a numeric port (host may be empty).
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port such as :8080 or 127.0.0.1:4222", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port in %q", addr)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("invalid host in %q", addr)
	}
	return nil
}

func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("want an origin such as https://dash.example.com, got %q", o)
	}
	return nil
}

// checkNATSURLs accepts what nats.go accepts: a comma-separated list of
// nats://, tls://, ws:// or wss:// URLs or bare host:port.
func checkNATSURLs(list string) error {
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return fmt.Errorf("empty entry in server list %q", list)
		}
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("invalid server URL %q", s)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("server URL %q: scheme must be nats, tls, ws or wss", s)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("server URL %q has no host", s)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
				return fmt.Errorf("server URL %q has an invalid port", s)
			}
		}
	}
	return nil
}

func validBucket(b string) bool {
	if b == "" {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
