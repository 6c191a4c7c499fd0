package gateway_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
)

const testSecret = "roomcast-test-secret-0123456789abcdef"

// token signs claims for the test gateway: iss and aud set, exp in an
// hour, unless claims say otherwise (a nil value deletes the claim).
func token(t testing.TB, method jwt.SigningMethod, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": "wall", "iss": "test-idp", "aud": "roomcast", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	key := any([]byte(testSecret))
	if method == jwt.SigningMethodNone {
		key = jwt.UnsafeAllowNoneSignatureType
	}
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func authConfig(t testing.TB, natsURL string) config.Config {
	cfg := roomtest.Config(t, natsURL)
	cfg.Auth.Mode = "jwt"
	cfg.Auth.Cookie = "rc_token"
	cfg.Auth.JWT.Secret = testSecret
	cfg.Auth.JWT.Issuer = "test-idp"
	cfg.Auth.JWT.Audience = "roomcast"
	cfg.Auth.JWT.Leeway = 0
	cfg.Auth.Roles = map[string][]string{"team": {"team-*"}}
	cfg.AllowedOrigins = []string{"https://dash.example.com"}
	cfg.TrustedProxies = []string{"127.0.0.1"}
	cfg.Limits.MaxRoomsPerConnection = 3
	cfg.Limits.MaxConnectionsPerIP = 2
	return cfg
}

// TestHostileInput runs each hostile input on its own connection against
// a gateway with JWT auth, checks the answer it gets, and after each row
// checks that an authorised client still gets its updates.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	g := roomtest.StartGateway(t, authConfig(t, ns.ClientURL()))
	nc := roomtest.Connect(t, ns)
	wsURL := "ws://" + g.Addr().String() + "/ws"
	good := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}, "roles": []string{"team"}})

	witness, _, err := roomtest.DialURL(t, wsURL+"?token="+good, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	witness.Join("sales")

	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	// A handshake row: the request and the HTTP status that must answer it.
	type handshake struct {
		query  string
		header http.Header
		status int
	}
	// A stream row: what a connected, authorised client sends, and the
	// error code of the reply or the close code that must follow.
	type stream struct {
		send  func(t *testing.T, c *roomtest.Client)
		code  string
		close int
	}
	text := func(s string) func(*testing.T, *roomtest.Client) {
		return func(t *testing.T, c *roomtest.Client) { c.Send(s) }
	}
	// fragmented sends one message as several WebSocket frames.
	fragmented := func(msg string) func(*testing.T, *roomtest.Client) {
		return func(t *testing.T, c *roomtest.Client) {
			w, err := c.Conn.NextWriter(websocket.TextMessage)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(msg); i += 100 {
				_, _ = io.WriteString(w, msg[i:min(i+100, len(msg))])
			}
			_ = w.Close()
		}
	}
	tests := []struct {
		name string
		hs   *handshake
		st   *stream
		http func(t *testing.T) // an HTTP endpoint row does its own checks
	}{
		// The handshake.
		{name: "no token", hs: &handshake{status: 401}},
		{name: "token not a JWT", hs: &handshake{query: "token=hello", status: 401}},
		{name: "token with bad characters", hs: &handshake{query: "token=a%22b.c.d", status: 401}},
		{name: "wrong signature", hs: &handshake{query: "token=" + good[:len(good)-4] + "AAAA", status: 401}},
		{name: "alg none", hs: &handshake{query: "token=" + token(t, jwt.SigningMethodNone, nil), status: 401}},
		{name: "alg HS512", hs: &handshake{query: "token=" + token(t, jwt.SigningMethodHS512, nil), status: 401}},
		{name: "expired", hs: &handshake{query: "token=" + token(t, jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}), status: 401}},
		{name: "no exp", hs: &handshake{query: "token=" + token(t, jwt.SigningMethodHS256, jwt.MapClaims{"exp": nil}), status: 401}},
		{name: "wrong audience", hs: &handshake{query: "token=" + token(t, jwt.SigningMethodHS256, jwt.MapClaims{"aud": "billing"}), status: 401}},
		{name: "wrong issuer", hs: &handshake{query: "token=" + token(t, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "evil"}), status: 401}},
		{name: "basic auth", hs: &handshake{header: hdr("Authorization", "Basic dXNlcjpwYXNz"), status: 401}},
		{name: "two tokens in the query", hs: &handshake{query: "token=" + good + "&token=" + good, status: 401}},
		{name: "cross-site origin", hs: &handshake{query: "token=" + good, header: hdr("Origin", "https://evil.example"), status: 403}},
		{name: "origin null", hs: &handshake{query: "token=" + good, header: hdr("Origin", "null"), status: 403}},
		{name: "oversized headers", hs: &handshake{query: "token=" + good, header: hdr("X-Pad", strings.Repeat("x", 40000)), status: 431}},
		{name: "oversized cookie token", hs: &handshake{header: hdr("Cookie", "rc_token="+strings.Repeat("a", 9000)), status: 401}},
		{name: "too many connections from one client IP", hs: &handshake{query: "token=" + good, header: hdr("X-Forwarded-For", "203.0.113.7"), status: 429}},
		{name: "allowed origin, token in header", hs: &handshake{header: hdr("Origin", "https://dash.example.com", "Authorization", "Bearer "+good), status: 101}},
		{name: "token in cookie", hs: &handshake{header: hdr("Cookie", "rc_token="+good), status: 101}},

		// The stream.
		{name: "forbidden room", st: &stream{send: text(`{"op":"join","room":"payroll","id":1}`), code: "forbidden"}},
		{name: "forbidden room with since", st: &stream{send: text(`{"op":"join","room":"payroll","since":3}`), code: "forbidden"}},
		{name: "room outside the role's pattern", st: &stream{send: text(`{"op":"join","room":"teamx"}`), code: "forbidden"}},
		{name: "wildcard room *", st: &stream{send: text(`{"op":"join","room":"*"}`), code: "bad_room"}},
		{name: "wildcard room >", st: &stream{send: text(`{"op":"join","room":">"}`), code: "bad_room"}},
		{name: "multi-token room", st: &stream{send: text(`{"op":"join","room":"sales.eu"}`), code: "bad_room"}},
		{name: "unknown op", st: &stream{send: text(`{"op":"publish","room":"sales","data":{}}`), code: "bad_op"}},
		{name: "malformed JSON", st: &stream{send: text(`{"op":`), code: "bad_json"}},
		{name: "too many rooms", st: &stream{send: func(t *testing.T, c *roomtest.Client) {
			for _, r := range []string{"team-a", "team-b", "team-c"} {
				c.Join(r)
			}
			c.Send(`{"op":"join","room":"sales"}`)
		}, code: "too_many_rooms"}},
		{name: "binary frame", st: &stream{send: func(t *testing.T, c *roomtest.Client) {
			_ = c.Conn.WriteMessage(websocket.BinaryMessage, []byte(`{"op":"join","room":"sales"}`))
		}, close: 1003}},
		{name: "invalid UTF-8", st: &stream{send: text("{\"op\":\"join\",\"room\":\"\xc3\x28\"}"), close: 1007}},
		// The gateway may close before the client has written it all (a
		// write error then): the close code is the answer.
		{name: "oversized frame", st: &stream{send: func(t *testing.T, c *roomtest.Client) {
			_ = c.Conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"join","room":"sales"`+strings.Repeat(" ", 5000)+`}`))
		}, close: 1009}},
		{name: "fragmented frames over the limit", st: &stream{send: fragmented(`{"op":"join","room":"sales"` + strings.Repeat(" ", 5000) + `}`), close: 1009}},
		{name: "command flood", st: &stream{send: func(t *testing.T, c *roomtest.Client) {
			for i := 0; i < 5000; i++ {
				_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if c.Conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"leave","room":"x"}`)) != nil {
					return
				}
			}
		}, close: 1008}},
		{name: "ping flood", st: &stream{send: func(t *testing.T, c *roomtest.Client) {
			for i := 0; i < 5000; i++ {
				if c.Conn.WriteControl(websocket.PingMessage, []byte("x"), time.Now().Add(5*time.Second)) != nil {
					return
				}
			}
		}, close: 1008}},

		// HTTP endpoints.
		{name: "api/rooms without token", http: func(t *testing.T) {
			if code, _ := roomtest.Get(t, roomtest.URL(g, "/api/rooms"), nil); code != 401 {
				t.Fatalf("status %d, want 401", code)
			}
		}},
		{name: "api/rooms with an expired token", http: func(t *testing.T) {
			h := hdr("Authorization", "Bearer "+token(t, jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()}))
			if code, body := roomtest.Get(t, roomtest.URL(g, "/api/rooms"), h); code != 401 || !strings.Contains(body, "expired") {
				t.Fatalf("status %d %q, want 401 naming expiry", code, body)
			}
		}},
		{name: "POST to /ws", http: func(t *testing.T) {
			resp, err := http.Post(roomtest.URL(g, "/ws?token="+good), "application/json", strings.NewReader(`{"op":"join"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("status %d, want 405", resp.StatusCode)
			}
		}},
		{name: "plain GET to /ws with a token", http: func(t *testing.T) {
			if code, _ := roomtest.Get(t, roomtest.URL(g, "/ws?token="+good), nil); code != 400 {
				t.Fatalf("status %d, want 400", code)
			}
		}},
		{name: "path traversal", http: func(t *testing.T) {
			for _, p := range []string{"/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc/passwd"} {
				if code, body := roomtest.Get(t, roomtest.URL(g, p), nil); code == 200 || strings.Contains(body, "root:") {
					t.Fatalf("%s: status %d", p, code)
				}
			}
		}},
		{name: "huge URL", http: func(t *testing.T) {
			if code, _ := roomtest.Get(t, roomtest.URL(g, "/api/rooms?x="+strings.Repeat("a", 40000)), nil); code != 431 {
				t.Fatalf("status %d, want 431", code)
			}
		}},
	}
	// Fill 203.0.113.7's two connections so that its third is refused.
	for i := 0; i < 2; i++ {
		if _, _, err := roomtest.DialURL(t, wsURL+"?token="+good, hdr("X-Forwarded-For", "203.0.113.7"), nil); err != nil {
			t.Fatal(err)
		}
	}

	// Every other row comes from its own client address (the gateway
	// trusts 127.0.0.1 as a proxy), so rows do not count against each
	// other's per-IP limit.
	for i, tt := range tests {
		from := fmt.Sprintf("192.0.2.%d", i+1)
		t.Run(tt.name, func(t *testing.T) {
			switch {
			case tt.hs != nil:
				h := tt.hs.header.Clone()
				if h == nil {
					h = http.Header{}
				}
				if h.Get("X-Forwarded-For") == "" {
					h.Set("X-Forwarded-For", from)
				}
				c, resp, err := roomtest.DialURL(t, wsURL+"?"+tt.hs.query, h, nil)
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				if status != tt.hs.status {
					t.Fatalf("handshake status %d (%v), want %d", status, err, tt.hs.status)
				}
				if status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				if c != nil {
					c.Join("sales")
					c.Conn.Close()
				}
			case tt.st != nil:
				c, _, err := roomtest.DialURL(t, wsURL, hdr("Authorization", "Bearer "+good, "X-Forwarded-For", from), &websocket.Dialer{WriteBufferSize: 256})
				if err != nil {
					t.Fatal(err)
				}
				tt.st.send(t, c)
				if tt.st.close != 0 {
					if code := c.ExpectClose(5 * time.Second); code != tt.st.close {
						t.Fatalf("close code %d, want %d", code, tt.st.close)
					}
					break
				}
				m := c.Expect("error")
				if m.Code != tt.st.code || m.Message == "" {
					t.Fatalf("reply %+v, want code %s", m, tt.st.code)
				}
				c.Send(`{"op":"leave","room":"sales"}`)
				c.Expect("left") // still usable
			default:
				tt.http(t)
			}
			publishAndExpect(t, nc, witness, tt.name)
		})
	}
	if len(tests) < 30 {
		t.Fatalf("only %d rows", len(tests))
	}
	// Forbidden and bad rooms never reached NATS.
	for _, room := range []string{"payroll", "teamx"} {
		if n := roomtest.Subscriptions(ns, "roomcast.live."+room); n != 0 {
			t.Errorf("room %q has %d subscriptions", room, n)
		}
	}
	if n := roomtest.SubscriptionsUnder(ns, "roomcast.live.sales."); n != 0 {
		t.Errorf("multi-token room reached NATS: %d subscriptions", n)
	}
	for name, atLeast := range map[string]float64{
		"roomcast_auth_failures_total":       13,
		"roomcast_connections_refused_total": 3,
	} {
		if got := metric(t, g, name); got < atLeast {
			t.Errorf("%s = %v, want at least %v", name, got, atLeast)
		}
	}
}

// TestTokenGrantsRooms: each token sees exactly its rooms, on the socket
// and in /api/rooms.
func TestTokenGrantsRooms(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := authConfig(t, ns.ClientURL())
	cfg.Limits.MaxRoomsPerConnection = 8
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)
	for _, room := range []string{"sales", "visitors", "team-a", "team-b"} {
		announce(t, nc, room)
	}
	tests := []struct {
		name   string
		claims jwt.MapClaims
		rooms  []string // exactly what /api/rooms lists and joins allow
	}{
		{"rooms claim", jwt.MapClaims{"rooms": []string{"sales"}}, []string{"sales"}},
		{"pattern", jwt.MapClaims{"rooms": []string{"team-*"}}, []string{"team-a", "team-b"}},
		{"role", jwt.MapClaims{"roles": []string{"TEAM"}}, []string{"team-a", "team-b"}},
		{"rooms and role", jwt.MapClaims{"rooms": []string{"visitors"}, "roles": []string{"team"}}, []string{"team-a", "team-b", "visitors"}},
		{"everything", jwt.MapClaims{"rooms": []string{"*"}}, []string{"sales", "team-a", "team-b", "visitors"}},
		{"nothing", jwt.MapClaims{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := token(t, jwt.SigningMethodHS256, tt.claims)
			roomtest.Eventually(t, 5*time.Second, func() error {
				_, body := roomtest.Get(t, roomtest.URL(g, "/api/rooms"), http.Header{"Authorization": {"Bearer " + tok}})
				if got := listedRooms(t, body); fmt.Sprint(got) != fmt.Sprint(tt.rooms) {
					return fmt.Errorf("/api/rooms lists %v, want %v", got, tt.rooms)
				}
				return nil
			})
			c, _, err := roomtest.DialURL(t, "ws://"+g.Addr().String()+"/ws?token="+url.QueryEscape(tok), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			granted := map[string]bool{}
			for _, r := range tt.rooms {
				granted[r] = true
			}
			for _, room := range []string{"sales", "visitors", "team-a", "team-b"} {
				c.Send(`{"op":"join","room":"` + room + `"}`)
				m, err := c.Next(5 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if want := map[bool]string{true: "joined", false: "error"}[granted[room]]; m.Op != want || (m.Op == "error" && m.Code != "forbidden") {
					t.Fatalf("join %s: %+v, want %s", room, m, want)
				}
			}
		})
	}
}

// TestTokenExpiryCloses4001: a connection is closed with 4001 when its
// token expires, and a fresh token gets back in.
func TestTokenExpiryCloses4001(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	g := roomtest.StartGateway(t, authConfig(t, ns.ClientURL()))
	short := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}, "exp": time.Now().Add(2 * time.Second).Unix()})
	c, _, err := roomtest.DialURL(t, "ws://"+g.Addr().String()+"/ws?token="+short, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Join("sales")
	if code := c.ExpectClose(10 * time.Second); code != 4001 {
		t.Fatalf("close code %d, want 4001", code)
	}
	if got := metric(t, g, "roomcast_tokens_expired_total"); got != 1 {
		t.Fatalf("roomcast_tokens_expired_total = %v", got)
	}
	fresh := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}})
	c, _, err = roomtest.DialURL(t, "ws://"+g.Addr().String()+"/ws?token="+fresh, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Join("sales")
}

// TestConnectionLimits: past max_connections the handshake gets 503, past
// max_connections_per_ip 429, both with Retry-After and counted; a closed
// connection gives its slot back; X-Forwarded-For counts only from a
// trusted proxy.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.Limits.MaxConnections = 4
	cfg.Limits.MaxConnectionsPerIP = 2
	cfg.TrustedProxies = []string{"10.0.0.0/8"} // not us: our X-Forwarded-For is ignored
	g := roomtest.StartGateway(t, cfg)
	wsURL := "ws://" + g.Addr().String() + "/ws"
	dial := func(xff string) (*roomtest.Client, int) {
		c, resp, err := roomtest.DialURL(t, wsURL, http.Header{"X-Forwarded-For": {xff}}, nil)
		if err != nil {
			if resp == nil {
				t.Fatal(err)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("status %d without Retry-After", resp.StatusCode)
			}
			return nil, resp.StatusCode
		}
		return c, 101
	}
	first, _ := dial("198.51.100.1")
	if _, status := dial("198.51.100.2"); status != 101 {
		t.Fatalf("second connection: %d", status)
	}
	// Both came from 127.0.0.1 whatever the header says.
	if _, status := dial("198.51.100.3"); status != 429 {
		t.Fatalf("third connection from one IP: %d, want 429", status)
	}
	first.Conn.Close()
	roomtest.Eventually(t, 5*time.Second, func() error {
		if _, status := dial("x"); status != 101 {
			return fmt.Errorf("slot not given back: %d", status)
		}
		return nil
	})
	if got := metric(t, g, "roomcast_connections_refused_total"); got < 1 {
		t.Fatalf("roomcast_connections_refused_total = %v", got)
	}

	// The gateway-wide limit, with the header believed.
	cfg2 := roomtest.Config(t, ns.ClientURL())
	cfg2.Limits.MaxConnections = 2
	cfg2.TrustedProxies = []string{"127.0.0.0/8"}
	g2 := roomtest.StartGateway(t, cfg2)
	for i, want := range []int{101, 101, 503} {
		_, resp, _ := roomtest.DialURL(t, "ws://"+g2.Addr().String()+"/ws", http.Header{"X-Forwarded-For": {fmt.Sprintf("198.51.100.%d", i)}}, nil)
		if resp == nil || resp.StatusCode != want {
			t.Fatalf("connection %d: %v, want %d", i, resp, want)
		}
	}
}

// TestAuthConfigErrors: an unusable key stops start-up naming the key.
func TestAuthConfigErrors(t *testing.T) {
	t.Parallel()
	for name, tt := range map[string]struct {
		set  func(*config.Config)
		want string
	}{
		"missing public key file": {func(c *config.Config) { c.Auth.JWT.PublicKeyFile = "/nonexistent.pem" }, "auth.jwt.public_key_file"},
		"secret file missing":     {func(c *config.Config) { c.Auth.JWT.SecretFile = "/nonexistent" }, "auth.jwt.secret_file"},
		"no key":                  {func(c *config.Config) {}, "auth.jwt"},
		"tls files missing":       {func(c *config.Config) { c.Auth.Mode = "none"; c.TLS.CertFile, c.TLS.KeyFile = "/x.pem", "/y.pem" }, "tls.cert_file"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := roomtest.Config(t, "")
			cfg.Auth.Mode = "jwt"
			tt.set(&cfg)
			g, err := gateway.Start(cfg, gateway.Options{})
			if err == nil {
				g.Abort()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %s", err, tt.want)
			}
		})
	}
}

// announce puts a catalogue entry for room, as `nats kv put` would,
// retrying until the gateway has created the bucket.
func announce(t testing.TB, nc *nats.Conn, room string) {
	t.Helper()
	entry := `{"room":"` + room + `","title":"` + room + `","metrics":[{"key":"v","label":"V","unit":""}]}`
	roomtest.Eventually(t, 5*time.Second, func() error {
		_, err := nc.Request("$KV.roomcast_catalog."+room, []byte(entry), time.Second)
		return err
	})
}

// listedRooms returns the sorted room names of an /api/rooms body.
func listedRooms(t testing.TB, body string) []string {
	t.Helper()
	var v struct{ Rooms []struct{ Room string } }
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("/api/rooms body %q: %v", body, err)
	}
	var rooms []string
	for _, r := range v.Rooms {
		rooms = append(rooms, r.Room)
	}
	sort.Strings(rooms)
	return rooms
}

// TestTLSEndToEnd: with tls.cert_file and tls.key_file the gateway serves
// HTTPS and WSS only; a client that trusts the CA gets its updates, and a
// token works over it as over plain WebSocket.
func TestTLSEndToEnd(t *testing.T) {
	t.Parallel()
	certs := roomtest.TLSCerts(t)
	ns := roomtest.StartNATS(t)
	cfg := authConfig(t, ns.ClientURL())
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certs.CertFile, certs.KeyFile
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)
	tlsCfg := &tls.Config{RootCAs: certs.Pool, MinVersion: tls.VersionTLS12}
	good := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}})

	c, _, err := roomtest.DialURL(t, "wss://"+g.Addr().String()+"/ws?token="+good, nil, &websocket.Dialer{TLSClientConfig: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	c.Join("sales")
	publishAndExpect(t, nc, c, "over TLS")

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 5 * time.Second}
	resp, err := hc.Get("https://" + g.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.ProtoMajor != 1 {
		t.Fatalf("https /healthz: %d, TLS %v, proto %s", resp.StatusCode, resp.TLS != nil, resp.Proto)
	}
	// Plain WebSocket to the TLS port fails; so does a client that does
	// not trust the certificate.
	if _, _, err := roomtest.DialURL(t, "ws://"+g.Addr().String()+"/ws?token="+good, nil, &websocket.Dialer{HandshakeTimeout: 2 * time.Second}); err == nil {
		t.Fatal("plain ws to the TLS port worked")
	}
	if _, _, err := roomtest.DialURL(t, "wss://"+g.Addr().String()+"/ws?token="+good, nil, nil); err == nil {
		t.Fatal("wss without trusting the CA worked")
	}
}

// TestHandshakeTimeout: a client that opens a connection and sends its
// request headers too slowly (or not at all) is disconnected after
// handshake_timeout, and counted.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.HandshakeTimeout = 300 * time.Millisecond
	g := roomtest.StartGateway(t, cfg)
	for name, start := range map[string]string{
		"nothing sent":   "",
		"partial header": "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", g.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if start != "" {
				if _, err := conn.Write([]byte(start)); err != nil {
					t.Fatal(err)
				}
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(conn) // returns when the gateway closes it
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the stalled connection was not closed")
			}
		})
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if got := metric(t, g, "roomcast_http_unserved_total"); got < 2 {
			return fmt.Errorf("roomcast_http_unserved_total = %v", got)
		}
		return nil
	})
}

// TestSocketIOTokenAndLimits: a Socket.IO session authenticates with the
// token in its CONNECT auth, is closed with 4001 when the token expires
// (as /ws is), and counts against limits.max_connections once
// authenticated: before, it waits in the pending pool, and a CONNECT that
// finds the gateway full is refused.
func TestSocketIOTokenAndLimits(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := authConfig(t, ns.ClientURL())
	cfg.Limits.MaxConnections = 2
	g := roomtest.StartGateway(t, cfg)
	sio := "ws://" + g.Addr().String() + "/socket.io/?EIO=4&transport=websocket"

	connect := func(tok string) (*websocket.Conn, string) {
		c, _, err := websocket.DefaultDialer.Dial(sio, nil) // no token: pending
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, open, err := c.ReadMessage(); err != nil || open[0] != '0' {
			t.Fatalf("open packet %q, %v", open, err)
		}
		_ = c.WriteMessage(websocket.TextMessage, []byte(`40{"token":"`+tok+`"}`))
		_, reply, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		return c, string(reply)
	}
	if _, reply := connect("not-a-token"); !strings.HasPrefix(reply, "44") {
		t.Fatalf("bad token: %q, want CONNECT_ERROR (44)", reply)
	}
	short := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}, "exp": time.Now().Add(2 * time.Second).Unix()})
	c, reply := connect(short)
	if !strings.HasPrefix(reply, "40") {
		t.Fatalf("good token: %q, want CONNECT (40)", reply)
	}
	// The refused session holds no slot: a /ws client takes the second,
	// and the gateway is full for /ws and for /socket.io/ with a token.
	long := token(t, jwt.SigningMethodHS256, jwt.MapClaims{"rooms": []string{"sales"}})
	if _, _, err := roomtest.DialURL(t, "ws://"+g.Addr().String()+"/ws?token="+long, nil, nil); err != nil {
		t.Fatal(err)
	}
	_, resp, err := websocket.DefaultDialer.Dial(sio+"&token="+long, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third session with a token: %v %v, want 503", resp, err)
	}
	if _, reply := connect(long); !strings.HasPrefix(reply, "44") || !strings.Contains(reply, "full") {
		t.Fatalf("CONNECT with the gateway full: %q, want CONNECT_ERROR saying it is full", reply)
	}
	code := 0
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			break
		}
	}
	if code != 4001 {
		t.Fatalf("close code %d when the token expired, want 4001", code)
	}
}
