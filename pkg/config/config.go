// Package config is roomcast's configuration: one struct shared by the
// gateway and the producer, its defaults, loading (config.yaml, then
// ROOMCAST_* environment variables, then flags) and validation. Every key is
// documented in config.yaml at the repository root; Default is the source
// of the values written there.
package config

import (
	"fmt"
	"time"

	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/producer"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Config is the whole configuration. Field tags are the config.yaml keys.
type Config struct {
	// Listen is the gateway's HTTP address.
	Listen string `mapstructure:"listen"`
	// MetricsListen, if set, serves /metrics on this address instead of
	// on Listen, so that the public listener never exposes it.
	MetricsListen string `mapstructure:"metrics_listen"`
	// AllowedOrigins lists the origins (scheme://host[:port]) whose pages
	// may open a WebSocket; empty means same origin only. "*" allows all.
	AllowedOrigins []string `mapstructure:"allowed_origins"`
	// AllowedHosts lists the host names (Host header, without port) this
	// gateway serves besides localhost, IP literals and the hosts of
	// AllowedOrigins; other hosts get 403 (DNS rebinding). "*" serves any.
	AllowedHosts []string `mapstructure:"allowed_hosts"`
	// TrustedProxies lists the networks (CIDR) of load balancers whose
	// X-Forwarded-For is believed when counting connections per client IP.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
	// TrustedHops is how many X-Forwarded-For entries, from the right,
	// the trusted proxies append: the client is the entry at that
	// position, whatever its address looks like.
	TrustedHops int `mapstructure:"trusted_hops"`

	PingInterval     time.Duration `mapstructure:"ping_interval"`
	PongTimeout      time.Duration `mapstructure:"pong_timeout"`
	WriteTimeout     time.Duration `mapstructure:"write_timeout"`
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`
	// IdleTimeout closes an HTTP keep-alive connection idle this long.
	IdleTimeout     time.Duration `mapstructure:"idle_timeout"`
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// DrainWindow spreads the 1012 closes of a shutdown over this long, so
	// that clients do not all reconnect to the other replicas at once.
	DrainWindow time.Duration `mapstructure:"drain_window"`
	// RoomLinger keeps an emptied room's subscription this long.
	RoomLinger time.Duration `mapstructure:"room_linger"`

	Auth        Auth        `mapstructure:"auth"`
	TLS         TLS         `mapstructure:"tls"`
	NATS        NATS        `mapstructure:"nats"`
	History     History     `mapstructure:"history"`
	Limits      Limits      `mapstructure:"limits"`
	Queue       Queue       `mapstructure:"queue"`
	IO          IO          `mapstructure:"io"`
	Compression Compression `mapstructure:"compression"`
	Log         Log         `mapstructure:"log"`
	Producer    Producer    `mapstructure:"producer"`
	Dashboard   Dashboard   `mapstructure:"dashboard"`
	SocketIO    SocketIO    `mapstructure:"socketio"`
}

// SocketIO configures the Socket.IO (Engine.IO v4, Socket.IO v5) endpoint
// at /socket.io/. Joins, rooms and the command rate follow limits.
type SocketIO struct {
	Enabled          bool          `mapstructure:"enabled"`
	PingInterval     time.Duration `mapstructure:"ping_interval"`
	PingTimeout      time.Duration `mapstructure:"ping_timeout"`
	MaxPayload       int           `mapstructure:"max_payload"`
	MaxSessionsPerIP int           `mapstructure:"max_sessions_per_ip"`
	// With auth.mode jwt, a session whose handshake carries no valid token
	// waits for its CONNECT in a pool of its own (PendingSessions in all,
	// PendingSessionsPerIP per address, ConnectTimeout each), which never
	// takes a connection slot until the CONNECT's token is valid.
	PendingSessions      int           `mapstructure:"pending_sessions"`
	PendingSessionsPerIP int           `mapstructure:"pending_sessions_per_ip"`
	ConnectTimeout       time.Duration `mapstructure:"connect_timeout"`
	// Conformance serves what the official protocol test suites expect
	// (short timings, echo handlers, /engine.io/); never in production.
	Conformance bool `mapstructure:"conformance"`
}

// NATS configures the NATS connection.
type NATS struct {
	// URL is a comma-separated server list; empty runs an embedded server.
	URL           string `mapstructure:"url"`
	Name          string `mapstructure:"name"`
	SubjectPrefix string `mapstructure:"subject_prefix"`
	CatalogBucket string `mapstructure:"catalog_bucket"`
	// CatalogExpireAfter drops a room from the catalogue when its entry
	// has not been announced again for this long; 0 keeps it until it is
	// deleted.
	CatalogExpireAfter time.Duration `mapstructure:"catalog_expire_after"`
	Embedded           Embedded      `mapstructure:"embedded"`

	// Credentials: at most one of user+password, token, nkey_seed_file
	// and creds_file.
	User         string  `mapstructure:"user"`
	Password     string  `mapstructure:"password"`
	Token        string  `mapstructure:"token"`
	NKeySeedFile string  `mapstructure:"nkey_seed_file"`
	CredsFile    string  `mapstructure:"creds_file"`
	TLS          NATSTLS `mapstructure:"tls"`
	// InboxPrefix starts the reply subjects of this connection's requests,
	// so that NATS permissions can give each user its own inboxes.
	InboxPrefix string `mapstructure:"inbox_prefix"`
}

// Credentials are the NATS credentials and TLS settings for broker.Connect.
func (n NATS) Credentials() broker.Credentials {
	return broker.Credentials{
		User: n.User, Password: n.Password, Token: n.Token,
		NKeySeedFile: n.NKeySeedFile, CredsFile: n.CredsFile,
		CAFile: n.TLS.CAFile, CertFile: n.TLS.CertFile, KeyFile: n.TLS.KeyFile,
		InboxPrefix: n.InboxPrefix,
	}
}

// NATSTLS configures TLS to NATS: a CA to trust and, for mutual TLS, a
// client certificate.
type NATSTLS struct {
	CAFile   string `mapstructure:"ca_file"`
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Auth configures who may connect and which rooms they may join.
type Auth struct {
	Mode string `mapstructure:"mode"` // none or jwt
	// Cookie names a cookie that may carry the token; empty: none.
	Cookie string `mapstructure:"cookie"`
	JWT    JWT    `mapstructure:"jwt"`
	// Roles maps a role of the token's roles claim to room patterns.
	Roles map[string][]string `mapstructure:"roles"`
}

// JWT configures token verification: one of secret, secret_file and
// public_key_file.
type JWT struct {
	Secret        string        `mapstructure:"secret"`
	SecretFile    string        `mapstructure:"secret_file"`
	PublicKeyFile string        `mapstructure:"public_key_file"`
	Issuer        string        `mapstructure:"issuer"`
	Audience      string        `mapstructure:"audience"`
	Leeway        time.Duration `mapstructure:"leeway"`
}

// TLS makes the gateway serve HTTPS and WSS.
type TLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Embedded configures the embedded nats-server.
type Embedded struct {
	Listen   string `mapstructure:"listen"`
	StoreDir string `mapstructure:"store_dir"`
	// ProducerPassword, with auth.mode jwt, lets producers of your own
	// connect as user "producer"; empty: only the in-process ones can.
	ProducerPassword string `mapstructure:"producer_password"`
}

// History configures sequence numbers, snapshots and resume, kept in a
// JetStream stream over the room subjects.
type History struct {
	Enabled    bool          `mapstructure:"enabled"`
	Stream     string        `mapstructure:"stream"`
	LivePrefix string        `mapstructure:"live_prefix"`
	Depth      int           `mapstructure:"depth"`
	MaxAge     time.Duration `mapstructure:"max_age"`
	Replicas   int           `mapstructure:"replicas"`
	// Memory and MemoryBytes bound the recent updates each room keeps in
	// the gateway's memory: snapshots and resumes inside them cost no
	// request to the stream.
	Memory      int `mapstructure:"memory"`
	MemoryBytes int `mapstructure:"memory_bytes"`
	// FetchTimeout bounds one read of the stream.
	FetchTimeout time.Duration `mapstructure:"fetch_timeout"`
	// ResumesPerSecond and ResumeBurst: the resume budget of one
	// connection (a token bucket).
	ResumesPerSecond float64 `mapstructure:"resumes_per_second"`
	ResumeBurst      int     `mapstructure:"resume_burst"`
}

// Limits bound what one client or producer can make the gateway do.
type Limits struct {
	MaxFrameBytes         int     `mapstructure:"max_frame_bytes"`
	MaxRoomsPerConnection int     `mapstructure:"max_rooms_per_connection"`
	CommandsPerSecond     float64 `mapstructure:"commands_per_second"`
	CommandBurst          int     `mapstructure:"command_burst"`
	MaxUpdateBytes        int     `mapstructure:"max_update_bytes"`
	// MaxConnections bounds WebSocket and Socket.IO sessions; 0: as many
	// as the TCP budget allows, at most DefaultMaxConnections.
	MaxConnections      int `mapstructure:"max_connections"`
	MaxConnectionsPerIP int `mapstructure:"max_connections_per_ip"`
	MaxHeaderBytes      int `mapstructure:"max_header_bytes"`
	// MaxTCPConnections bounds every TCP connection on listen; 0: the
	// descriptor limit less ReservedFDs.
	MaxTCPConnections      int `mapstructure:"max_tcp_connections"`
	MaxTCPConnectionsPerIP int `mapstructure:"max_tcp_connections_per_ip"`
	// ReservedFDs are descriptors kept for NATS, files and metrics.
	ReservedFDs int `mapstructure:"reserved_fds"`
	// IPv6Prefix: IPv6 clients are counted per network of this length.
	IPv6Prefix int `mapstructure:"ipv6_prefix"`
}

// DefaultMaxConnections caps limits.max_connections 0 (automatic).
const DefaultMaxConnections = 20000

// Queue is the per-client outgoing queue and its slow-client policy.
type Queue struct {
	ConflateAfter int `mapstructure:"conflate_after"`
	MaxMessages   int `mapstructure:"max_messages"`
	MaxBytes      int `mapstructure:"max_bytes"`
	BatchBytes    int `mapstructure:"batch_bytes"`
	// CoalesceDelay: a client's writer, woken by a first queued message,
	// waits this long so that what follows leaves in the same frame.
	CoalesceDelay time.Duration `mapstructure:"coalesce_delay"`
	// Writer chooses how /ws connections are written: "goroutine" (a
	// writer goroutine per busy connection), "loop" (the event-loop
	// writer: a few write loops for all connections; Linux, without TLS
	// or compression; on io_uring or write(2), see IO) or "auto" (loop
	// when it can write through io_uring, else goroutine).
	Writer string `mapstructure:"writer"`
}

// IO chooses how the event-loop writer hands its writes to the kernel.
type IO struct {
	// URing: "auto" submits the write loops' sends through io_uring when
	// the kernel (and seccomp) allow it, else uses write(2) and says so
	// in the log; "on" refuses to start without io_uring; "off" always
	// uses write(2). Only queue.writer loop writes through io_uring.
	URing string `mapstructure:"uring"`
}

// Compression configures permessage-deflate for clients that offer it.
type Compression struct {
	Enabled  bool `mapstructure:"enabled"`
	MinBytes int  `mapstructure:"min_bytes"` // smaller updates go uncompressed
	Level    int  `mapstructure:"level"`     // flate level 1 (fastest) to 9
}

// Log configures log/slog.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

// Dashboard configures the bundled dashboard page.
type Dashboard struct {
	// Title replaces "roomcast" in the page's header: a string, or a map
	// by language ({zh: 销售大屏, en: Sales wall}).
	Title any `mapstructure:"title"`
	// Screens are named screens, shown at /?screen=<name>.
	Screens []Screen `mapstructure:"screens"`
}

// Screen is a named screen of dashboard.screens; see catalog.Screen.
type Screen struct {
	Name    string                `mapstructure:"name"`
	Title   any                   `mapstructure:"title"` // string or map by language
	Columns int                   `mapstructure:"columns"`
	Panels  []catalog.ScreenPanel `mapstructure:"panels"`
}

// TitleText returns the dashboard title as a catalogue text.
func (d Dashboard) TitleText() catalog.Text {
	t, _ := textOf(d.Title)
	return t
}

// CatalogScreens returns the configured screens as the catalogue shapes
// them. The configuration must have been validated.
func (d Dashboard) CatalogScreens() []catalog.Screen {
	out := make([]catalog.Screen, 0, len(d.Screens))
	for _, s := range d.Screens {
		t, _ := textOf(s.Title)
		out = append(out, catalog.Screen{Name: s.Name, Title: t, Columns: s.Columns, Panels: s.Panels})
	}
	return out
}

// textOf turns a string, or a map of language to string, from the config
// file into a catalogue text.
func textOf(v any) (catalog.Text, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return catalog.Plain(v), nil
	case map[string]any:
		t := catalog.Text{}
		for k, s := range v {
			str, ok := s.(string)
			if !ok {
				return nil, fmt.Errorf("the text for %q is not a string", k)
			}
			t[k] = str
		}
		return t, nil
	}
	return nil, fmt.Errorf("must be a string or a map by language, got %T", v)
}

// Producer configures cmd/producer and the gateway's --demo producers.
type Producer struct {
	AnnounceInterval time.Duration  `mapstructure:"announce_interval"`
	Rooms            []ProducerRoom `mapstructure:"rooms"`
}

// ProducerRoom is one generated room.
type ProducerRoom = producer.Room

// ProducerMetric is one generated metric.
type ProducerMetric = producer.Metric

// Room generators (pkg/producer).
const (
	GeneratorSalesDay    = producer.GeneratorSalesDay
	GeneratorVisitorsDay = producer.GeneratorVisitorsDay
)

// Default returns the built-in configuration, which config.yaml repeats.
func Default() Config {
	return Config{
		Listen:           ":8080",
		AllowedOrigins:   []string{},
		AllowedHosts:     []string{},
		TrustedProxies:   []string{},
		TrustedHops:      1,
		PingInterval:     20 * time.Second,
		PongTimeout:      10 * time.Second,
		WriteTimeout:     10 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		IdleTimeout:      5 * time.Second,
		ShutdownTimeout:  15 * time.Second,
		DrainWindow:      5 * time.Second,
		RoomLinger:       time.Second,
		Auth:             Auth{Mode: "none", JWT: JWT{Leeway: 5 * time.Second}, Roles: map[string][]string{}},
		NATS: NATS{
			Name:          "roomcast",
			SubjectPrefix: protocol.DefaultSubjectPrefix,
			CatalogBucket: catalog.DefaultBucket,
			// Ten announce intervals: a producer that stopped is gone
			// from the screens within minutes, one restarting is not.
			CatalogExpireAfter: 5 * time.Minute,
			Embedded:           Embedded{Listen: "127.0.0.1:4222"},
			InboxPrefix:        "_INBOX",
		},
		History: History{
			Enabled:    true,
			Stream:     "ROOMCAST",
			LivePrefix: "roomcast.live",
			Depth:      100,
			MaxAge:     24 * time.Hour,
			Replicas:   1,

			Memory:           100,
			MemoryBytes:      1 << 20,
			FetchTimeout:     2 * time.Second,
			ResumesPerSecond: 1,
			ResumeBurst:      40,
		},
		Limits: Limits{
			MaxFrameBytes:          4096,
			MaxRoomsPerConnection:  32,
			CommandsPerSecond:      20,
			CommandBurst:           50,
			MaxUpdateBytes:         64 << 10,
			MaxConnections:         0,
			MaxConnectionsPerIP:    200,
			MaxHeaderBytes:         16 << 10,
			MaxTCPConnections:      0,
			MaxTCPConnectionsPerIP: 256,
			ReservedFDs:            512,
			IPv6Prefix:             64,
		},
		Queue: Queue{
			ConflateAfter: 32,
			MaxMessages:   256,
			MaxBytes:      1 << 20,
			BatchBytes:    32 << 10,
			CoalesceDelay: 0,
			Writer:        "auto",
		},
		IO:          IO{URing: "auto"},
		Compression: Compression{Enabled: false, MinBytes: 1024, Level: 1},
		Log:         Log{Level: "info", Format: "text"},
		Producer:    Producer{AnnounceInterval: 30 * time.Second, Rooms: DemoRooms()},
		Dashboard:   Dashboard{Title: "", Screens: []Screen{}},
		SocketIO: SocketIO{
			Enabled:      true,
			PingInterval: 25 * time.Second,
			PingTimeout:  20 * time.Second,
			MaxPayload:   100000,

			PendingSessions:      64,
			PendingSessionsPerIP: 4,
			ConnectTimeout:       5 * time.Second,
		},
	}
}

// DemoTitle is the dashboard title of `gateway --demo` when
// dashboard.title is not set.
func DemoTitle() map[string]any {
	return map[string]any{"zh": "实时销售大屏", "en": "Live sales"}
}

// DemoRooms are the sample rooms: a simulated shop's sales day (orders,
// totals, rankings, channel mix, the latest orders) every second and its
// visitors every 2 s.
func DemoRooms() []ProducerRoom {
	return []ProducerRoom{
		{Room: "sales", Interval: time.Second, Generator: GeneratorSalesDay},
		{Room: "visitors", Interval: 2 * time.Second, Generator: GeneratorVisitorsDay},
	}
}
