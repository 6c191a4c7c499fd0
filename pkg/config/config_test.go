package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestShippedConfigMatchesDefault keeps config.yaml at the repository root
// honest: it must load, and say exactly what the built-in defaults say.
func TestShippedConfigMatchesDefault(t *testing.T) {
	t.Parallel()
	got, err := Load(LoadOptions{File: "../../config.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("config.yaml differs from Default():\n got %+v\nwant %+v", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"unknown key", "listen: :9000\nlistne: :9001\n", []string{`unknown key "listne"`}},
		{"unknown nested key", "nats:\n  urll: nats://x:4222\n", []string{`unknown key "nats.urll"`}},
		{"unknown key in a room", "producer:\n  rooms:\n    - room: a\n      interval: 1s\n      colour: red\n      metrics: [{key: x, generator: uniform}]\n", []string{"unknown key", "colour"}},
		{"bad duration", "ping_interval: soon\n", []string{"ping_interval", "soon"}},
		{"zero duration", "pong_timeout: 0s\n", []string{"pong_timeout", "positive"}},
		{"negative duration", "shutdown_timeout: -1s\n", []string{"shutdown_timeout"}},
		{"bad listen", "listen: 8080\n", []string{"listen", "host:port"}},
		{"bad listen port", "listen: ':http-alt'\n", []string{"listen", "port"}},
		{"bad embedded listen", "nats:\n  embedded:\n    listen: 'localhost'\n", []string{"nats.embedded.listen"}},
		{"bad nats url", "nats:\n  url: 'http://x:4222'\n", []string{"nats.url", "scheme"}},
		{"empty entry in url list", "nats:\n  url: 'nats://a:4222,,nats://b:4222'\n", []string{"nats.url", "empty"}},
		{"wildcard prefix", "nats:\n  subject_prefix: 'rooms.>'\n", []string{"nats.subject_prefix"}},
		{"bad bucket", "nats:\n  catalog_bucket: 'a.b'\n", []string{"nats.catalog_bucket"}},
		{"bad origin", "allowed_origins: ['example.com']\n", []string{"allowed_origins[0]"}},
		{"not a number", "limits:\n  max_frame_bytes: lots\n", []string{"limits.max_frame_bytes"}},
		{"zero limit", "limits:\n  max_rooms_per_connection: 0\n", []string{"limits.max_rooms_per_connection"}},
		{"queue order", "queue:\n  conflate_after: 300\n", []string{"queue.max_messages"}},
		{"queue too small for updates", "queue:\n  max_bytes: 1000\n", []string{"queue.max_bytes"}},
		{"unknown writer", "queue:\n  writer: threads\n", []string{"queue.writer"}},
		{"unknown io_uring mode", "io:\n  uring: maybe\n", []string{"io.uring", "auto, on or off"}},
		{"io_uring on with the goroutine writer", "queue:\n  writer: goroutine\nio:\n  uring: on\n", []string{"io.uring", "queue.writer auto or loop"}},
		{"io_uring on with TLS", "io:\n  uring: on\ntls:\n  cert_file: c.pem\n  key_file: k.pem\n", []string{"io.uring", "tls"}},
		{"log level", "log:\n  level: loud\n", []string{"log.level"}},
		{"log format", "log:\n  format: xml\n", []string{"log.format"}},
		{"bad room", "producer:\n  rooms:\n    - room: 'a.b'\n      interval: 1s\n      metrics: [{key: x, generator: uniform}]\n", []string{"producer.rooms[0].room"}},
		{"bad generator", "producer:\n  rooms:\n    - room: a\n      interval: 1s\n      metrics: [{key: x, generator: gauss}]\n", []string{"producer.rooms[0].metrics[0].generator"}},
		{"min over max", "producer:\n  rooms:\n    - room: a\n      interval: 1s\n      metrics: [{key: x, generator: uniform, min: 5, max: 1}]\n", []string{"producer.rooms[0].metrics[0].min"}},
		{"reserved key", "producer:\n  rooms:\n    - room: a\n      interval: 1s\n      metrics: [{key: ts, generator: uniform}]\n", []string{"reserved"}},
		{"no interval", "producer:\n  rooms:\n    - room: a\n      metrics: [{key: x, generator: uniform}]\n", []string{"producer.rooms[0].interval"}},
		{"no metrics", "producer:\n  rooms:\n    - room: a\n      interval: 1s\n", []string{"producer.rooms[0].metrics"}},
		{"duplicate room", "producer:\n  rooms:\n    - {room: a, interval: 1s, metrics: [{key: x, generator: uniform}]}\n    - {room: a, interval: 1s, metrics: [{key: x, generator: uniform}]}\n", []string{"defined twice"}},
		{"not yaml", "listen: [\n", []string{"config"}},
		{"drain window too long", "drain_window: 20s\n", []string{"drain_window"}},
		{"negative linger", "room_linger: -1s\n", []string{"room_linger"}},
		{"bad history depth", "history:\n  depth: 0\n", []string{"history.depth"}},
		{"socketio ping interval", "socketio:\n  ping_interval: 1ms\n", []string{"socketio.ping_interval"}},
		{"socketio ping timeout", "socketio:\n  ping_timeout: soon\n", []string{"socketio.ping_timeout"}},
		{"socketio max payload", "socketio:\n  max_payload: 10\n", []string{"socketio.max_payload"}},
		{"socketio sessions per ip", "socketio:\n  max_sessions_per_ip: -1\n", []string{"socketio.max_sessions_per_ip"}},
		{"bad history age", "history:\n  max_age: soon\n", []string{"history.max_age"}},
		{"live prefix overlaps", "history:\n  live_prefix: roomcast.room.live\n", []string{"history.live_prefix", "overlaps"}},
		{"bad replicas", "history:\n  replicas: 7\n", []string{"history.replicas"}},
		{"bad stream name", "history:\n  stream: 'a.b'\n", []string{"history.stream"}},
		{"bad auth mode", "auth:\n  mode: basic\n", []string{"auth.mode", "none or jwt"}},
		{"jwt without key", "auth:\n  mode: jwt\n", []string{"auth.jwt", "exactly one"}},
		{"jwt with two keys", "auth:\n  mode: jwt\n  jwt:\n    secret: 0123456789abcdef0123456789abcdef\n    public_key_file: k.pem\n", []string{"auth.jwt", "exactly one"}},
		{"short jwt secret", "auth:\n  mode: jwt\n  jwt:\n    secret: hunter2\n", []string{"auth.jwt.secret", "32 bytes"}},
		{"jwt leeway too long", "auth:\n  jwt:\n    leeway: 1h\n", []string{"auth.jwt.leeway"}},
		{"bad role pattern", "auth:\n  roles:\n    ops: ['sales.>']\n", []string{"auth.roles.ops"}},
		{"bad cookie name", "auth:\n  cookie: 'a b'\n", []string{"auth.cookie"}},
		{"tls cert without key", "tls:\n  cert_file: c.pem\n", []string{"tls", "both"}},
		{"two nats credentials", "nats:\n  url: nats://x:4222\n  user: a\n  token: t\n", []string{"nats", "at most one"}},
		{"nats password without user", "nats:\n  url: nats://x:4222\n  password: p\n", []string{"nats.password"}},
		{"nats client cert without key", "nats:\n  url: nats://x:4222\n  tls:\n    cert_file: c.pem\n", []string{"nats.tls"}},
		{"credentials for the embedded server", "nats:\n  token: t\n", []string{"nats", "embedded"}},
		{"bad inbox prefix", "nats:\n  inbox_prefix: '_INBOX.>'\n", []string{"nats.inbox_prefix"}},
		{"room generator with metrics", "producer:\n  rooms:\n    - {room: a, interval: 1s, generator: sales_day, metrics: [{key: x, generator: uniform}]}\n", []string{"producer.rooms[0].metrics"}},
		{"unknown room generator", "producer:\n  rooms:\n    - {room: a, interval: 1s, generator: weather}\n", []string{"producer.rooms[0].generator"}},
		{"expiry too short", "nats:\n  catalog_expire_after: 10s\n", []string{"nats.catalog_expire_after"}},
		{"dashboard title of numbers", "dashboard:\n  title: {zh: 5}\n", []string{"dashboard.title"}},
		{"screen without panels", "dashboard:\n  screens:\n    - {name: wall}\n", []string{"dashboard.screens[0]", "panels"}},
		{"screen with bad room", "dashboard:\n  screens:\n    - {name: wall, panels: [{room: 'a b'}]}\n", []string{"dashboard.screens[0]", "room"}},
		{"screen name", "dashboard:\n  screens:\n    - {name: 'ops wall', panels: [{room: a}]}\n", []string{"dashboard.screens[0]", "name"}},
		{"screen twice", "dashboard:\n  screens:\n    - {name: w, panels: [{room: a}]}\n    - {name: w, panels: [{room: a}]}\n", []string{"defined twice"}},
		{"bad trusted proxy", "trusted_proxies: ['10.0.0.0/33']\n", []string{"trusted_proxies[0]"}},
		{"negative max connections", "limits:\n  max_connections: -1\n", []string{"limits.max_connections"}},
		{"max connections over the TCP budget", "limits:\n  max_connections: 100\n  max_tcp_connections: 50\n", []string{"limits.max_connections", "max_tcp_connections"}},
		{"bad allowed host", "allowed_hosts: [\"https://dash.example.com\"]\n", []string{"allowed_hosts[0]"}},
		{"zero trusted hops", "trusted_hops: 0\n", []string{"trusted_hops"}},
		{"ipv6 prefix too short", "limits:\n  ipv6_prefix: 16\n", []string{"limits.ipv6_prefix"}},
		{"short producer password", "nats:\n  embedded:\n    producer_password: abc\n", []string{"nats.embedded.producer_password"}},
		{"tiny header limit", "limits:\n  max_header_bytes: 100\n", []string{"limits.max_header_bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(LoadOptions{File: writeFile(t, tt.yaml)})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestMissingExplicitFile(t *testing.T) {
	t.Parallel()
	if _, err := Load(LoadOptions{File: filepath.Join(t.TempDir(), "nope.yaml")}); err == nil {
		t.Fatal("a missing --config file must be an error")
	}
}

// Not parallel: it sets environment variables.
func TestPrecedence(t *testing.T) {
	path := writeFile(t, "listen: ':9000'\nping_interval: 5s\nnats:\n  url: nats://file:4222\nallowed_origins: [https://a.example]\n")
	t.Setenv("ROOMCAST_PING_INTERVAL", "7s")
	t.Setenv("ROOMCAST_NATS_URL", "nats://env:4222")
	t.Setenv("ROOMCAST_LIMITS_MAX_ROOMS_PER_CONNECTION", "3")
	t.Setenv("ROOMCAST_ALLOWED_ORIGINS", "https://b.example,https://c.example")
	c, err := Load(LoadOptions{File: path, Overrides: map[string]any{"nats.url": "nats://flag:4222"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":9000" {
		t.Errorf("listen from file: %q", c.Listen)
	}
	if c.PingInterval != 7*time.Second {
		t.Errorf("ping_interval from env: %v", c.PingInterval)
	}
	if c.NATS.URL != "nats://flag:4222" {
		t.Errorf("nats.url from flag: %q", c.NATS.URL)
	}
	if c.Limits.MaxRoomsPerConnection != 3 {
		t.Errorf("limits from env: %d", c.Limits.MaxRoomsPerConnection)
	}
	if !reflect.DeepEqual(c.AllowedOrigins, []string{"https://b.example", "https://c.example"}) {
		t.Errorf("allowed_origins from env: %q", c.AllowedOrigins)
	}
	if c.PongTimeout != Default().PongTimeout {
		t.Errorf("pong_timeout default: %v", c.PongTimeout)
	}

	t.Setenv("ROOMCAST_PONG_TIMEOUT", "forever")
	if _, err := Load(LoadOptions{File: path}); err == nil || !strings.Contains(err.Error(), "pong_timeout") {
		t.Fatalf("bad env duration: %v", err)
	}
}

func TestRoomsReplaceDefault(t *testing.T) {
	t.Parallel()
	c, err := Load(LoadOptions{File: writeFile(t, "producer:\n  rooms:\n    - room: orders\n      interval: 1s\n      metrics: [{key: n, generator: walk, min: 0, max: 10, step: 1}]\n")})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Producer.Rooms) != 1 || c.Producer.Rooms[0].Room != "orders" || c.Producer.Rooms[0].Title != "" {
		t.Fatalf("rooms: %+v", c.Producer.Rooms)
	}
}

// TestURingModes: each io.uring mode loads as written, unquoted (YAML
// 1.1 read on and off as booleans).
func TestURingModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"auto", "on", "off"} {
		c, err := Load(LoadOptions{File: writeFile(t, "queue:\n  writer: loop\nio:\n  uring: "+mode+"\n")})
		if err != nil {
			t.Fatalf("io.uring: %s: %v", mode, err)
		}
		if c.IO.URing != mode {
			t.Errorf("io.uring: %s loaded as %q", mode, c.IO.URing)
		}
	}
}
