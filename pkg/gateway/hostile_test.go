package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
)

// witnessAddr is where the authorised client of TestHostileConnections
// comes from: another address of the attackers' family (127.0.0.1), so
// that a per-address limit the attack fills is not the witness's.
const witnessAddr = "127.0.0.2"

// servedWithin checks that an authorised client from the address from
// connects, joins sales and receives a fresh update, all within limit, and
// returns how long that took.
func servedWithin(t *testing.T, g *gateway.Gateway, nc *nats.Conn, from, tok, mark string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	d := &websocket.Dialer{
		HandshakeTimeout: limit,
		NetDialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)},
		}).DialContext,
	}
	c, resp, err := roomtest.DialURL(t, "ws://"+g.Addr().String()+"/ws?token="+tok, nil, d)
	if err != nil {
		t.Fatalf("witness refused: %v (%v)", err, resp)
	}
	defer c.Conn.Close()
	c.Send(`{"op":"join","room":"sales"}`)
	published := false
	for {
		m, err := c.Next(limit - time.Since(start))
		if err != nil {
			t.Fatalf("witness not served within %v: %v", limit, err)
		}
		switch {
		case m.Op == "joined" && !published:
			data := fmt.Sprintf(`{"mark":%q}`, mark)
			if err := nc.Publish(salesSubject, []byte(data)); err != nil {
				t.Fatal(err)
			}
			published = true
		case m.Op == "update" && strings.Contains(string(m.Data), mark):
			return time.Since(start)
		}
	}
}

// TestHostileConnections: attacks on the gateway's connection budgets, one
// per row, each with its expected answer. After each row an authorised
// client from another address of the same family is served within 1 s.
func TestHostileConnections(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := authConfig(t, ns.ClientURL())
	cfg.TrustedProxies = nil // the attackers connect directly
	cfg.Limits.MaxConnectionsPerIP = 200
	cfg.Limits.MaxTCPConnectionsPerIP = 600
	cfg.IdleTimeout = 30 * time.Second // idle attackers stay for the count
	cfg.HandshakeTimeout = time.Second
	cfg.Compression.Enabled = true // the deflate bomb needs it negotiated
	// Room for a POST of 1,000 CONNECTs that each carry a real token
	// (about 220 KB): the default socketio.max_payload (100 KB) would
	// refuse it with 413 before the command budget is tried.
	cfg.SocketIO.MaxPayload = 512 << 10
	// The pending pool's 4 sessions must still be waiting when the 300th
	// tokenless handshake comes: under -race on a loaded machine the 300
	// took 6.5 s, the default 5 s connect_timeout freed the pool on the
	// way, and 8 were admitted.
	cfg.SocketIO.ConnectTimeout = time.Minute
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)
	good := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}})
	addr := g.Addr().String()

	tests := []struct {
		name   string
		attack func(t *testing.T)
	}{
		{"1,000 idle keep-alive connections from one address: 600 counted, the rest 429 at accept", func(t *testing.T) {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			refused := 0
			for range 1000 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
					refused++ // closed at accept before our request went out
					continue
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					refused++ // closed at accept, the answer lost to a reset
					continue
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
				case http.StatusTooManyRequests:
					refused++
				default:
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			if refused != 400 {
				t.Errorf("%d of 1000 refused, want 400", refused)
			}
			if got := metric(t, g, "roomcast_tcp_connections"); got < 600 {
				t.Errorf("roomcast_tcp_connections = %v with 600 idle connections held", got)
			}
			if got := metric(t, g, "roomcast_tcp_refused_total"); got != 400 {
				t.Errorf("roomcast_tcp_refused_total = %v, want 400", got)
			}
			// A refused connection that sends nothing reads the status line.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("past the budget: %v %v, want 429 with Retry-After", resp, err)
			}
			took := servedWithin(t, g, nc, witnessAddr, good, "during the idle flood", time.Second)
			t.Logf("witness served in %v while 600 idle connections are held", took)
		}},
		{"300 tokenless Engine.IO handshakes from one address: 4 wait in the pending pool, the rest 429; no connection slot taken", func(t *testing.T) {
			hc := &http.Client{Timeout: 5 * time.Second}
			defer hc.CloseIdleConnections()
			codes := map[int]int{}
			for range 300 {
				resp, err := hc.Get("http://" + addr + "/socket.io/?EIO=4&transport=polling")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				codes[resp.StatusCode]++
			}
			if codes[200] != 4 || codes[429] != 296 {
				t.Errorf("statuses %v, want 4 × 200 and 296 × 429", codes)
			}
			// A handshake with its token takes a connection slot at once.
			resp, err := hc.Get("http://" + addr + "/socket.io/?EIO=4&transport=polling&token=" + good)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("handshake with a token: %d", resp.StatusCode)
			}
			// The same address's /ws client is served.
			took := servedWithin(t, g, nc, "127.0.0.1", good, "same address", time.Second)
			t.Logf("/ws client from the attacking address served in %v", took)
		}},
		{"one long-polling POST of 1,000 CONNECTs, each with a token: CONNECT_ERROR rate_limited past the budget, then the session is closed", func(t *testing.T) {
			hc := &http.Client{Timeout: 5 * time.Second}
			defer hc.CloseIdleConnections()
			base := "http://" + addr + "/socket.io/?EIO=4&transport=polling"
			resp, err := hc.Get(base + "&token=" + good)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var open struct{ SID string }
			if resp.StatusCode != 200 || len(b) < 2 || json.Unmarshal(b[1:], &open) != nil || open.SID == "" {
				t.Fatalf("handshake: %d %q", resp.StatusCode, b)
			}
			session := base + "&sid=" + open.SID
			connects := make([]string, 1000)
			for i := range connects {
				connects[i] = `40{"token":"` + good + `"}`
			}
			before := metric(t, g, "roomcast_client_errors_total")
			resp, err = hc.Post(session, "text/plain;charset=UTF-8", strings.NewReader(strings.Join(connects, "\x1e")))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("POST: %d", resp.StatusCode)
			}
			// The first command_burst (50) CONNECTs are served, the next
			// 50 get CONNECT_ERROR rate_limited, and the one after closes
			// the session (event flood): the rest are never read, so at
			// most about 50 tokens were verified, not 1,000.
			refused := metric(t, g, "roomcast_client_errors_total") - before
			if refused < 1 || refused > 100 {
				t.Errorf("roomcast_client_errors_total rose by %v, want about command_burst (50) rate_limited", refused)
			}
			roomtest.Eventually(t, 5*time.Second, func() error {
				resp, err := hc.Get(session)
				if err != nil {
					return err
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "Session ID unknown") {
					return fmt.Errorf("poll after the flood: %d %q, want the session closed (400 Session ID unknown)", resp.StatusCode, b)
				}
				return nil
			})
		}},
		{"DNS rebinding: Host and Origin of another domain get 403 before the origin check", func(t *testing.T) {
			evil := "evil.example:" + portOf(addr)
			before := metric(t, g, "roomcast_hosts_refused_total")
			_, resp, err := roomtest.DialURL(t, "ws://"+addr+"/ws?token="+good, http.Header{"Host": {evil}, "Origin": {"http://" + evil}}, nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("/ws: %v %v, want 403", resp, err)
			}
			for _, path := range []string{"/", "/api/rooms", "/socket.io/?EIO=4&transport=polling"} {
				code, body := getHost(t, "http://"+addr+path, evil)
				if code != http.StatusForbidden || !strings.Contains(body, "allowed_hosts") {
					t.Errorf("%s: %d %q, want 403 naming allowed_hosts", path, code, body)
				}
			}
			// Health checks answer whatever the host; listed hosts, IP
			// literals and localhost are served.
			if code, _ := getHost(t, "http://"+addr+"/readyz", evil); code != 200 {
				t.Errorf("/readyz with another host: %d", code)
			}
			for _, host := range []string{"dash.example.com", "DASH.example.com.", "localhost:1", "[::1]:8080", "192.0.2.1"} {
				if code, _ := getHost(t, "http://"+addr+"/", host); code != 200 {
					t.Errorf("host %s: %d, want 200", host, code)
				}
			}
			if got := metric(t, g, "roomcast_hosts_refused_total") - before; got != 4 {
				t.Errorf("roomcast_hosts_refused_total rose by %v, want 4", got)
			}
		}},
		{"X-Forwarded-For from a client inside the trusted ranges, shipped compose and Kubernetes settings: its real address is counted", func(t *testing.T) {
			for name, set := range shippedProxySettings(t) {
				cfg := roomtest.Config(t, ns.ClientURL())
				set(&cfg)
				// 127.0.0.1 stands in for the load balancer's address.
				cfg.TrustedProxies = append(cfg.TrustedProxies, "127.0.0.1")
				cfg.Limits.MaxConnectionsPerIP = 2
				pg := roomtest.StartGateway(t, cfg)
				dial := func(xff string) int {
					_, resp, err := roomtest.DialURL(t, "ws://"+pg.Addr().String()+"/ws", http.Header{"X-Forwarded-For": {xff}}, nil)
					if resp == nil {
						t.Fatalf("%s: %v", name, err)
					}
					return resp.StatusCode
				}
				// The client at 172.20.5.6 (inside 172.16.0.0/12) writes
				// its own X-Forwarded-For; the balancer appends its address.
				for i, want := range []int{101, 101, 429} {
					if got := dial(fmt.Sprintf("198.51.100.%d, 172.20.5.6", i)); got != want {
						t.Fatalf("%s: connection %d: %d, want %d", name, i+1, got, want)
					}
				}
				// IPv6 clients count per /64.
				for i, want := range []int{101, 101, 429} {
					if got := dial(fmt.Sprintf("2001:db8::%d", i+1)); got != want {
						t.Fatalf("%s: IPv6 connection %d in one /64: %d, want %d", name, i+1, got, want)
					}
				}
				if got := dial("2001:db8:0:1::1"); got != 101 {
					t.Fatalf("%s: IPv6 client in another /64: %d", name, got)
				}
			}
			// A client that connects directly from an address inside
			// trusted_proxies cannot be told from the balancer: its own
			// X-Forwarded-For is believed, as docs/security.md says (the
			// operator lists only the balancer there, and the Kubernetes
			// NetworkPolicy lets nothing else reach the gateways). Here
			// 127.0.0.1 is trusted and dials directly with a new forged
			// address each time: past max_connections_per_ip (2), all
			// accepted.
			cfg := roomtest.Config(t, ns.ClientURL())
			cfg.TrustedProxies = []string{"127.0.0.0/8"}
			cfg.Limits.MaxConnectionsPerIP = 2
			pg := roomtest.StartGateway(t, cfg)
			for i := range 3 {
				_, resp, err := roomtest.DialURL(t, "ws://"+pg.Addr().String()+"/ws", http.Header{"X-Forwarded-For": {fmt.Sprintf("203.0.113.%d", i+1)}}, nil)
				if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("direct client in trusted_proxies, forged address %d: %v %v, want 101 (believed, as documented)", i+1, resp, err)
				}
			}
			// What is counted is the forged address: claiming the first
			// one twice more fills its budget.
			for i, want := range []int{101, 429} {
				_, resp, _ := roomtest.DialURL(t, "ws://"+pg.Addr().String()+"/ws", http.Header{"X-Forwarded-For": {"203.0.113.1"}}, nil)
				if resp == nil || resp.StatusCode != want {
					t.Fatalf("forged 203.0.113.1, connection %d: %v, want %d", i+2, resp, want)
				}
			}
		}},
		{"permessage-deflate bomb: 10 MiB of zeros in one compressed frame, close 1009", func(t *testing.T) {
			c, _, err := roomtest.DialURL(t, "ws://"+addr+"/ws?token="+good, nil, &websocket.Dialer{EnableCompression: true})
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Conn.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("0", 10<<20)))
			if code := c.ExpectClose(5 * time.Second); code != websocket.CloseMessageTooBig {
				t.Fatalf("close code %d, want 1009", code)
			}
		}},
		{"permessage-deflate bomb, fragmented: 10 MiB of zeros as one compressed message over many frames, close 1009", func(t *testing.T) {
			// A 512-byte write buffer makes the compressed stream (about
			// 10 KB) go out as some twenty frames of one message.
			c, _, err := roomtest.DialURL(t, "ws://"+addr+"/ws?token="+good, nil, &websocket.Dialer{EnableCompression: true, WriteBufferSize: 512})
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			w, err := c.Conn.NextWriter(websocket.TextMessage)
			if err != nil {
				t.Fatal(err)
			}
			chunk := strings.Repeat("0", 64<<10)
			for range (10 << 20) / len(chunk) {
				if _, err := io.WriteString(w, chunk); err != nil {
					break // the gateway closed the connection mid-message
				}
			}
			_ = w.Close()
			if code := c.ExpectClose(5 * time.Second); code != websocket.CloseMessageTooBig {
				t.Fatalf("close code %d, want 1009", code)
			}
		}},
		{"300 slowloris handshakes from one address: closed at handshake_timeout, counted", func(t *testing.T) {
			before := metric(t, g, "roomcast_http_unserved_total")
			var conns []net.Conn
			for range 300 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, _ = c.Write([]byte("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"))
				conns = append(conns, c)
			}
			took := servedWithin(t, g, nc, witnessAddr, good, "during slowloris", time.Second)
			t.Logf("witness served in %v while 300 handshakes stall", took)
			for _, c := range conns {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadAll(c); err != nil {
					t.Fatalf("a stalled handshake was not closed: %v", err)
				}
			}
			roomtest.Eventually(t, 5*time.Second, func() error {
				if got := metric(t, g, "roomcast_http_unserved_total") - before; got < 300 {
					return fmt.Errorf("roomcast_http_unserved_total rose by %v, want 300", got)
				}
				return nil
			})
		}},
		{"join/leave churn over random rooms: no subscription outlives its room", func(t *testing.T) {
			all := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"*"}})
			c, _, err := roomtest.DialURL(t, "ws://"+addr+"/ws?token="+all, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 24 { // within command_burst
				room := fmt.Sprintf("churn-%d-%d", i, time.Now().UnixNano())
				c.Send(`{"op":"join","room":"` + room + `"}`)
				c.Send(`{"op":"leave","room":"` + room + `"}`)
			}
			for range 48 {
				if m, err := c.Next(5 * time.Second); err != nil || (m.Op != "joined" && m.Op != "left") {
					t.Fatalf("reply %+v %v", m, err)
				}
			}
			c.Conn.Close()
			roomtest.Eventually(t, 5*time.Second, func() error {
				if n := roomtest.SubscriptionsUnder(ns, "roomcast.live.churn-"); n != 0 {
					return fmt.Errorf("%d churned rooms still subscribed", n)
				}
				return nil
			})
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.attack(t)
			took := servedWithin(t, g, nc, witnessAddr, good, fmt.Sprintf("row %d", i), time.Second)
			t.Logf("witness served in %v", took)
		})
	}
	// Every held connection was given back.
	roomtest.Eventually(t, 5*time.Second, func() error {
		if got := metric(t, g, "roomcast_tcp_connections"); got > 2 {
			return fmt.Errorf("roomcast_tcp_connections = %v after the attackers left", got)
		}
		return nil
	})
}

// TestTCPBudget: past max_tcp_connections a connection gets 503 at
// accept; limits that do not fit in the open-file limit stop start-up
// saying by how much.
func TestTCPBudget(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.Limits.MaxTCPConnections = 20
	cfg.Limits.MaxConnections = 10
	cfg.IdleTimeout = 500 * time.Millisecond
	g := roomtest.StartGateway(t, cfg)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	status := func() int {
		c, err := net.Dial("tcp", g.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 20 {
		if s := status(); s != 200 {
			t.Fatalf("connection %d: %d", i, s)
		}
	}
	if s := status(); s != 503 && s != 0 {
		t.Fatalf("connection 21: %d, want 503 (or a reset)", s)
	}
	if got := metric(t, g, "roomcast_tcp_refused_total"); got != 1 {
		t.Fatalf("roomcast_tcp_refused_total = %v", got)
	}
	// idle_timeout closes the idle ones, and their budget comes back.
	roomtest.Eventually(t, 5*time.Second, func() error {
		if got := metric(t, g, "roomcast_tcp_connections"); got != 0 {
			return fmt.Errorf("roomcast_tcp_connections = %v", got)
		}
		return nil
	})
	if s := status(); s != 200 {
		t.Fatalf("after idle_timeout: %d", s)
	}

	for name, set := range map[string]func(l *struct{ tcp, sessions, reserved *int }){
		"limits.max_tcp_connections": func(l *struct{ tcp, sessions, reserved *int }) { *l.tcp = 1 << 29 },
		"limits.max_connections":     func(l *struct{ tcp, sessions, reserved *int }) { *l.sessions = 1 << 29 },
		"limits.reserved_fds":        func(l *struct{ tcp, sessions, reserved *int }) { *l.reserved = 1 << 30 },
	} {
		cfg := roomtest.Config(t, "")
		set(&struct{ tcp, sessions, reserved *int }{&cfg.Limits.MaxTCPConnections, &cfg.Limits.MaxConnections, &cfg.Limits.ReservedFDs})
		g, err := gateway.Start(cfg, gateway.Options{})
		if err == nil {
			g.Abort()
			t.Fatalf("%s: started", name)
		}
		if !strings.HasPrefix(err.Error(), name) || (name != "limits.reserved_fds" && !strings.Contains(err.Error(), "lower it by")) {
			t.Errorf("%s: error %q", name, err)
		}
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// getHost GETs url with the Host header host.
func getHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// shippedProxySettings returns how docker-compose.yml and
// deploy/kubernetes/config.yaml set trusted_proxies and trusted_hops.
func shippedProxySettings(t *testing.T) map[string]func(*config.Config) {
	t.Helper()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	env := compose.Services["gateway"].Environment
	if env["ROOMCAST_TRUSTED_PROXIES"] == "" {
		t.Fatal("docker-compose.yml: the gateway sets no ROOMCAST_TRUSTED_PROXIES")
	}
	k8s, err := config.Load(config.LoadOptions{File: "../../deploy/kubernetes/config.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]func(*config.Config){
		"docker-compose.yml": func(c *config.Config) {
			c.TrustedProxies = strings.Split(env["ROOMCAST_TRUSTED_PROXIES"], ",")
			if h := env["ROOMCAST_TRUSTED_HOPS"]; h != "" {
				n, err := strconv.Atoi(h)
				if err != nil {
					t.Fatalf("ROOMCAST_TRUSTED_HOPS %q: %v", h, err)
				}
				c.TrustedHops = n
			}
		},
		"deploy/kubernetes/config.yaml": func(c *config.Config) {
			c.TrustedProxies, c.TrustedHops = k8s.TrustedProxies, k8s.TrustedHops
		},
	}
}

// TestEmbeddedStorePerProcess: two gateways with embedded NATS and no
// store_dir (as two `gateway --demo` on one machine) get a store each,
// removed when they stop; two given the same store_dir are refused, naming
// the key.
func TestEmbeddedStorePerProcess(t *testing.T) {
	t.Parallel()
	storeOf := func(g *gateway.Gateway) string { return g.Embedded().JetStreamConfig().StoreDir }
	var dirs []string
	for range 2 {
		cfg := roomtest.Config(t, "")
		cfg.NATS.Embedded.StoreDir = ""
		g, err := gateway.Start(cfg, gateway.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Abort()
		dirs = append(dirs, storeOf(g))
	}
	if dirs[0] == dirs[1] || !strings.HasPrefix(dirs[0], os.TempDir()) {
		t.Fatalf("stores %q and %q, want two temporary ones", dirs[0], dirs[1])
	}

	shared := t.TempDir()
	cfg := roomtest.Config(t, "")
	cfg.NATS.Embedded.StoreDir = shared
	g, err := gateway.Start(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := roomtest.Config(t, "")
	cfg2.NATS.Embedded.StoreDir = shared
	if g2, err := gateway.Start(cfg2, gateway.Options{}); err == nil {
		g2.Abort()
		t.Fatal("a second gateway started on the same store")
	} else if !strings.Contains(err.Error(), "nats.embedded.store_dir") || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("error %q does not name nats.embedded.store_dir", err)
	}
	// An update stored before the first stops...
	nc, err := nats.Connect(g.Embedded().ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	seq := publish(t, nc, "restart", `{"kept":true}`)
	nc.Close()
	// ...once it stops, the directory is free, and the next gateway on it
	// has the room's history.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	g2, err := gateway.Start(cfg2, gateway.Options{})
	if err != nil {
		t.Fatalf("the store was not freed: %v", err)
	}
	defer g2.Abort()
	roomtest.Eventually(t, 10*time.Second, func() error {
		if ok, why := g2.Ready(); !ok {
			return fmt.Errorf("second gateway not ready: %s", why)
		}
		return nil
	})
	c := roomtest.Dial(t, g2)
	c.Join("restart")
	if m := c.Expect("update"); m.Seq != seq || string(m.Data) != `{"kept":true}` {
		t.Fatalf("after the restart, room restart has seq %d %s, want seq %d {\"kept\":true}", m.Seq, m.Data, seq)
	}
	nc2 := roomtest.Connect(t, g2.Embedded())
	took := servedWithin(t, g2, nc2, witnessAddr, "", "after the restart", time.Second)
	t.Logf("witness served in %v by the gateway on the freed store", took)

	// A temporary store goes with its gateway.
	cfg3 := roomtest.Config(t, "")
	cfg3.NATS.Embedded.StoreDir = ""
	g3, err := gateway.Start(cfg3, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := storeOf(g3)
	g3.Abort()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temporary store %s left behind: %v", dir, err)
	}
}

// TestEmbeddedNATSAuth: with auth.mode jwt the embedded NATS server takes
// no client without credentials; the in-process producers' generated ones
// and nats.embedded.producer_password publish rooms, and a producer reads
// nothing but its own replies.
func TestEmbeddedNATSAuth(t *testing.T) {
	t.Parallel()
	cfg := authConfig(t, "")
	cfg.NATS.Embedded.ProducerPassword = "producer-password-0123"
	g := roomtest.StartGateway(t, cfg)
	url := g.Embedded().ClientURL()

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("a client without credentials was accepted")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("error %v, want an authorization violation", err)
	}
	if nc, err := nats.Connect(url, nats.UserInfo("producer", "guess")); err == nil {
		nc.Close()
		t.Fatal("a wrong password was accepted")
	}

	good := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}})
	c, _, err := roomtest.DialURL(t, "ws://"+g.Addr().String()+"/ws?token="+good, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Join("sales")

	// The demo producers' credentials, and a producer of the user's own.
	demo := g.ProducerCredentials()
	for name, opts := range map[string][]nats.Option{
		"demo producer": {nats.UserInfo(demo.User, demo.Password), nats.CustomInboxPrefix(demo.InboxPrefix)},
		"own producer":  {nats.UserInfo("producer", cfg.NATS.Embedded.ProducerPassword), nats.CustomInboxPrefix("_INBOX_producer")},
	} {
		violations := make(chan error, 4)
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer nc.Close()
		publishAndExpect(t, nc, c, name)
		if _, err := nc.SubscribeSync("roomcast.live.>"); err != nil {
			t.Fatal(err)
		}
		_ = nc.Flush()
		select {
		case err := <-violations:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				t.Fatalf("%s: subscribing to the rooms: %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s could subscribe to the rooms", name)
		}
	}
	// An authorised client is still served.
	nc, err := nats.Connect(url, nats.UserInfo(demo.User, demo.Password), nats.CustomInboxPrefix(demo.InboxPrefix))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	took := servedWithin(t, g, nc, witnessAddr, good, "after the refused NATS clients", time.Second)
	t.Logf("witness served in %v", took)
}

// warnRecorder keeps the messages of the warnings logged.
type warnRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (h *warnRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *warnRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.mu.Lock()
		h.msgs = append(h.msgs, r.Message)
		h.mu.Unlock()
	}
	return nil
}
func (h *warnRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnRecorder) WithGroup(string) slog.Handler      { return h }

// TestRefusedHostLoggedOnce: a refused host is logged once, naming the key
// to set, however often it comes back and on whatever port (allowed_hosts
// takes names without a port).
func TestRefusedHostLoggedOnce(t *testing.T) {
	t.Parallel()
	h := &warnRecorder{}
	g, err := gateway.Start(roomtest.Config(t, ""), gateway.Options{Log: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Abort()
	addr := g.Addr().String()
	for _, host := range []string{"evil.example:" + portOf(addr), "evil.example:" + portOf(addr), "EVIL.example:1"} {
		if code, _ := getHost(t, "http://"+addr+"/", host); code != http.StatusForbidden {
			t.Fatalf("host %s: %d, want 403", host, code)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var refused []string
	for _, m := range h.msgs {
		if strings.Contains(m, "Host") {
			refused = append(refused, m)
		}
	}
	if len(refused) != 1 || !strings.Contains(refused[0], "allowed_hosts") {
		t.Fatalf("warnings about the refused host: %q, want one naming allowed_hosts", refused)
	}
}
