package socketio_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
	"github.com/roomcast/roomcast/pkg/socketio"
)

// prefixGrant allows the rooms that start with its prefix.
type prefixGrant string

func (p prefixGrant) Allows(room string) bool { return strings.HasPrefix(room, string(p)) }

// authorize accepts {"token":"good"} (rooms starting with "s") and refuses
// anything else.
func authorize(r *http.Request, auth json.RawMessage) (socketio.Grant, error) {
	var a struct{ Token string }
	_ = json.Unmarshal(auth, &a)
	if a.Token != "good" {
		return nil, errors.New("bad token")
	}
	return prefixGrant("s"), nil
}

func TestConnect(t *testing.T) {
	t.Parallel()
	g, _, _ := startGateway(t, nil, authorize)
	tests := []struct {
		name, packet, want string
		closes             bool
	}{
		{"unknown namespace", "0/nope,", `4/nope,{"message":"Invalid namespace"}`, false},
		{"unknown namespace without comma", "0/nope", `4/nope,{"message":"Invalid namespace"}`, false},
		{"conformance namespace off", "0/custom,", `4/custom,{"message":"Invalid namespace"}`, false},
		{"no auth", "0", `4{"message":"bad token","data":{"code":"unauthorized"}}`, false},
		{"refused auth", `0{"token":"bad"}`, `4{"message":"bad token","data":{"code":"unauthorized"}}`, false},
		{"good auth", `0{"token":"good"}`, `0{"sid":"`, false},
		{"auth not an object", `0[1]`, "", true},
		{"not JSON", `0{token}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, g)
			c.send(tt.packet)
			if tt.closes {
				if code := c.closed(); code != websocket.CloseProtocolError {
					t.Fatalf("close code %d", code)
				}
				return
			}
			if got := c.next(); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			// The session stays usable: a good connect still works.
			c.send(`0{"token":"good"}`)
			if got := c.next(); !strings.HasPrefix(got, `0{"sid":"`) {
				t.Fatalf("connect after: %q", got)
			}
		})
	}
}

// TestEventErrors: every refused event gets the error event and, when the
// emit asked for one, an ack with the error; the session goes on.
func TestEventErrors(t *testing.T) {
	t.Parallel()
	g, _, _ := startGateway(t, func(c *config.Config) { c.Limits.MaxRoomsPerConnection = 1 }, authorize)
	c := connect(t, g, `{"token":"good"}`)
	tests := []struct {
		name, packet string
		code         string // "" for success
	}{
		{"bad room", `21["join",{"room":"a.b"}]`, "bad_room"},
		{"long room", `22["join",{"room":"` + strings.Repeat("x", 65) + `"}]`, "bad_room"},
		{"missing room", `23["join",{}]`, "bad_room"},
		{"no argument", `24["join"]`, "bad_room"},
		{"wrong argument", `25["join",42]`, "bad_json"},
		{"forbidden", `26["join",{"room":"visitors"}]`, "forbidden"},
		{"unknown event", `27["dance"]`, "bad_op"},
		{"join", `28["join",{"room":"sales"}]`, ""},
		{"join by name", `29["join","sales"]`, ""},
		{"too many rooms", `210["join",{"room":"sx"}]`, "too_many_rooms"},
		{"leave bad room", `211["leave",{"room":"*"}]`, "bad_room"},
		{"leave", `212["leave",{"room":"sales"}]`, ""},
		{"join after leave", `213["join",{"room":"sx"}]`, ""},
		// Joins take history as /ws joins do (one client core).
		{"join with history", `214["join",{"room":"sx","history":5}]`, ""},
		{"bad history", `215["join",{"room":"sx","history":"forever"}]`, "bad_json"},
		{"since and history", `216["join",{"room":"sx","since":3,"history":5}]`, "bad_json"},
	}
	for _, tt := range tests {
		c.send(tt.packet)
		id := strings.TrimSuffix(strings.SplitN(tt.packet[1:], "[", 2)[0], "")
		if tt.code == "" {
			if got := c.nextOther(); got != "3"+id+`[{"ok":true}]` {
				t.Fatalf("%s: got %q", tt.name, got)
			}
			continue
		}
		var ackID int
		fmt.Sscan(id, &ackID)
		event, ack := errorPackets(ackID, tt.code)
		if got := c.nextOther(); !strings.HasPrefix(got, event) {
			t.Fatalf("%s: got %q, want the error event %q", tt.name, got, event)
		}
		if got := c.nextOther(); !strings.HasPrefix(got, ack) {
			t.Fatalf("%s: got %q, want the ack %q", tt.name, got, ack)
		}
	}
	// Without an ack id: the error event only.
	c.send(`2["join",{"room":"a.b"}]`)
	if got := c.nextOther(); !strings.HasPrefix(got, `2["error",{"code":"bad_room"`) {
		t.Fatalf("got %q", got)
	}
}

// TestMalformedPacketClosesOnlyThatSession: each malformed packet closes
// its own session; a client in the room keeps receiving.
func TestMalformedPacketClosesOnlyThatSession(t *testing.T) {
	t.Parallel()
	g, ns, _ := startGateway(t, nil, nil)
	publish(t, ns, 20*time.Millisecond, "sales")
	watcher := connect(t, g, "")
	watcher.send(`21["join",{"room":"sales"}]`)
	tests := []struct {
		name string
		msg  string // an Engine.IO message
		bin  bool
	}{
		{"not an engine.io packet", "abc", false},
		{"unknown socket.io type", "4abc", false},
		{"event payload not an array", "42{}", false},
		{"invalid ack id", `42abc["join",{"room":"sales"}]`, false},
		{"event name not a string", "42[1]", false},
		{"ack without id", "43[1]", false},
		{"connect_error from a client", `44{"message":"x"}`, false},
		{"disconnect with payload", `41{"a":1}`, false},
		{"binary without its packet", "\x01\x02", true},
		{"text while attachments are due", `451-["join",{"_placeholder":true,"num":0}]`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := connect(t, g, "")
			typ := websocket.TextMessage
			if tt.bin {
				typ = websocket.BinaryMessage
			}
			_ = c.ws.WriteMessage(typ, []byte(tt.msg))
			if strings.HasPrefix(tt.msg, "451-") {
				c.send(`2["join",{"room":"sales"}]`)
			}
			if code := c.closed(); code != websocket.CloseProtocolError {
				t.Fatalf("close code %d, want %d", code, websocket.CloseProtocolError)
			}
			// The watcher is still served.
			for {
				if m := watcher.next(); strings.HasPrefix(m, `2["update_data",`) {
					break
				}
			}
		})
	}
}

// TestUpdateData: the event carries the producer's payload, compacted and
// otherwise unchanged, to WebSocket and polling sessions alike; a DISCONNECT
// of the main namespace leaves the rooms.
func TestUpdateData(t *testing.T) {
	t.Parallel()
	g, ns, _ := startGateway(t, nil, nil)
	nc := roomtest.Connect(t, ns)
	c := connect(t, g, "")
	c.send(`21["join",{"room":"sales"}]`)
	if got := c.next(); got != `31[{"ok":true}]` {
		t.Fatalf("ack %q", got)
	}
	p := openPolling(t, g)
	if status := p.post(`40` + "\x1e" + `42["join",{"room":"sales"}]`); status != 200 {
		t.Fatalf("POST %d", status)
	}
	payload := `{ "sales": 12.5, "note": "销售额 \"q\"", "nested": {"a": [1, 2]} }`
	want := `2["update_data",{"sales":12.5,"note":"销售额 \"q\"","nested":{"a":[1,2]}}]`
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Members("sales"); n != 2 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})
	if err := nc.Publish("roomcast.room.sales", []byte(payload)); err != nil {
		t.Fatal(err)
	}
	if got := c.next(); got != want {
		t.Fatalf("websocket got %q, want %q", got, want)
	}
	var got []string
	for !containsPacket(got, "4"+want) {
		got = append(got, p.poll()...)
		if len(got) > 20 {
			t.Fatalf("polling got %q", got)
		}
	}
	if !containsPacket(got, "431[") && !containsPacket(got, `40{"sid"`) {
		t.Fatalf("polling got %q", got)
	}

	c.send("1") // DISCONNECT the main namespace
	p.post("41")
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Members("sales"); n != 0 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})
}

func containsPacket(packets []string, prefix string) bool {
	for _, p := range packets {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

func TestLimits(t *testing.T) {
	t.Parallel()
	g, _, _ := startGateway(t, func(c *config.Config) {
		c.Limits.CommandsPerSecond, c.Limits.CommandBurst = 0.001, 2
		c.SocketIO.MaxPayload = 1024
		c.SocketIO.ConnectTimeout = 300 * time.Millisecond
	}, nil)

	t.Run("rate", func(t *testing.T) {
		c := connect(t, g, "")
		c.send(`21["join","sales"]`)
		c.send(`22["join","sales"]`)
		c.send(`23["join","sales"]`)
		// The CONNECT took one of the two in the budget. Acks of joins
		// come through the hub's queue, refusals directly: their relative
		// order is not kept.
		var got []string
		for range 5 {
			got = append(got, c.nextOther())
		}
		for _, want := range []string{`31[{"ok":true}]`, `2["error",{"code":"rate_limited"`, `32[{"ok":false,"error":{"code":"rate_limited"`, `33[{"ok":false,"error":{"code":"rate_limited"`} {
			if !containsPacket(got, want) {
				t.Fatalf("got %q, want %q among them", got, want)
			}
		}
		for range 2 { // past command_burst refused in a row: closed
			c.send(`2["join","sales"]`)
		}
		if code := c.closed(); code != websocket.ClosePolicyViolation {
			t.Fatalf("close code %d", code)
		}
	})
	t.Run("CONNECT flood", func(t *testing.T) {
		// CONNECTs share the budget (each may cost a token check): the
		// first took one, one more gets CONNECT_ERROR, then past
		// command_burst in a row the session is closed.
		c := connect(t, g, "")
		for range 4 {
			c.send(`0`)
		}
		if code := c.closed(); code != websocket.ClosePolicyViolation {
			t.Fatalf("close code %d", code)
		}
	})
	t.Run("oversized message", func(t *testing.T) {
		c := connect(t, g, "")
		c.send(`2["join","` + strings.Repeat("x", 1100) + `"]`)
		if code := c.closed(); code != websocket.CloseMessageTooBig {
			t.Fatalf("close code %d", code)
		}
	})
	t.Run("oversized POST", func(t *testing.T) {
		p := openPolling(t, g)
		if status := p.post("4" + strings.Repeat("x", 1100)); status != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d", status)
		}
		if status := p.post("40"); status != 400 {
			t.Fatalf("session still open: %d", status)
		}
	})
	t.Run("no connect in time", func(t *testing.T) {
		c := dial(t, g)
		if code := c.closed(); code == 0 {
			t.Fatal("not closed")
		}
	})
}

// TestShutdown: Socket.IO sessions are closed with 1012 (WebSocket) or the
// close packet (a waiting poll), and nothing is left running.
func TestShutdown(t *testing.T) {
	base := roomtest.Goroutines()
	cfg := roomtest.Config(t, "") // embedded NATS: it stops with the gateway
	g, err := gateway.Start(cfg, gateway.Options{Log: roomtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, g, "")
	c.send(`21["join","sales"]`)
	c.next()
	p := openPolling(t, g)
	p.post("40")
	p.poll() // the CONNECT answer
	// A poll waiting at shutdown is answered with the close packet; one
	// that arrives after it, with 503 or 400, a refused connection, or one
	// closed under it (reset, or EOF: its request came as the listener's
	// connections were closed; the waiting case is tested in package
	// engineio). Either way Shutdown must not wait for it (the heartbeat
	// is far longer than the deadline).
	polled := make(chan string, 1)
	go func() {
		resp, err := http.Get(p.url)
		if err != nil {
			polled <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		polled <- fmt.Sprint(resp.StatusCode, " ", string(b))
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if code := c.closed(); code != 1012 {
		t.Fatalf("close code %d", code)
	}
	if got := <-polled; got != "200 1" && !strings.HasPrefix(got, "503 ") && !strings.HasPrefix(got, "400 ") &&
		!strings.Contains(got, "refused") && !strings.Contains(got, "reset by peer") && !strings.HasSuffix(got, "EOF") {
		t.Fatalf("waiting poll got %q", got)
	}
	http.DefaultClient.CloseIdleConnections()
	c.ws.Close()
	roomtest.WaitGoroutines(t, base)
}

// TestGatewayModes: /socket.io/ follows socketio.enabled, /engine.io/ and
// the test timings exist only in conformance mode.
func TestGatewayModes(t *testing.T) {
	t.Parallel()
	off, _, _ := startGateway(t, func(c *config.Config) { c.SocketIO.Enabled = false }, nil)
	if status, _ := httpDo(t, "GET", roomtest.URL(off, "/socket.io/?EIO=4&transport=polling"), ""); status != 404 {
		t.Fatalf("socketio disabled: %d", status)
	}
	on, _, _ := startGateway(t, nil, nil)
	if status, _ := httpDo(t, "GET", roomtest.URL(on, "/engine.io/?EIO=4&transport=polling"), ""); status != 404 {
		t.Fatalf("/engine.io/ outside conformance mode: %d", status)
	}
	if status, body := httpDo(t, "GET", roomtest.URL(on, "/socket.io/?EIO=4&transport=polling"), ""); status != 200 || !strings.Contains(body, `"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000`) {
		t.Fatalf("handshake: %d %s", status, body)
	}
	conf, _, _ := startGateway(t, func(c *config.Config) { c.SocketIO.Conformance = true }, nil)
	for _, path := range []string{"/socket.io/", "/engine.io/"} {
		status, body := httpDo(t, "GET", roomtest.URL(conf, path+"?EIO=4&transport=polling"), "")
		if status != 200 || !strings.Contains(body, `"pingInterval":300,"pingTimeout":200,"maxPayload":1000000`) {
			t.Fatalf("conformance %s: %d %s", path, status, body)
		}
	}
	c := dial(t, conf)
	c.send(`0/custom,{"token":"x"}`)
	if got := c.next(); !strings.HasPrefix(got, `0/custom,{"sid":"`) {
		t.Fatalf("connect /custom: %q", got)
	}
	if got := c.next(); got != `2/custom,["auth",{"token":"x"}]` {
		t.Fatalf("auth event: %q", got)
	}
}

// TestJWT: with auth.mode jwt, CONNECT takes the token from the auth
// payload or the handshake request, and its grant decides joins.
func TestJWT(t *testing.T) {
	t.Parallel()
	const secret = "roomcast-test-secret-0123456789abcdef"
	g, _, _ := startGateway(t, func(c *config.Config) {
		c.Auth.Mode = "jwt"
		c.Auth.JWT.Secret = secret
		c.Auth.JWT.Issuer, c.Auth.JWT.Audience = "test-idp", "roomcast"
	}, nil)
	sign := func(claims jwt.MapClaims) string {
		c := jwt.MapClaims{"sub": "wall", "iss": "test-idp", "aud": "roomcast", "exp": time.Now().Add(time.Hour).Unix()}
		for k, v := range claims {
			c[k] = v
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(jwt.MapClaims{"rooms": []string{"sales"}})
	expired := sign(jwt.MapClaims{"rooms": []string{"sales"}, "exp": time.Now().Add(-time.Hour).Unix()})

	for _, auth := range []string{"", `{"token":"nope"}`, `{"token":"` + expired + `"}`} {
		c := dial(t, g)
		c.send("0" + auth)
		if got := c.next(); !strings.HasPrefix(got, `4{"message":"unauthorized: `) {
			t.Fatalf("auth %s: got %q", auth, got)
		}
	}
	c := connect(t, g, `{"token":"`+good+`"}`)
	c.send(`21["join",{"room":"visitors"}]`)
	if got := c.nextOther(); !strings.HasPrefix(got, `2["error",{"code":"forbidden"`) {
		t.Fatalf("got %q", got)
	}
	c.nextOther() // its ack
	c.send(`22["join",{"room":"sales"}]`)
	if got := c.nextOther(); got != `32[{"ok":true}]` {
		t.Fatalf("got %q", got)
	}

	// The token in the handshake request, as for /ws.
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/socket.io/?EIO=4&transport=websocket&token="+good, nil)
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	defer ws.Close()
	q := &client{t: t, ws: ws}
	q.next()
	q.send("0")
	if got := q.next(); !strings.HasPrefix(got, `0{"sid":"`) {
		t.Fatalf("token in the query: %q", got)
	}
}

// TestSessionsPerIP counts the X-Forwarded-For client behind a trusted
// proxy, like /ws does.
func TestSessionsPerIP(t *testing.T) {
	t.Parallel()
	g, _, _ := startGateway(t, func(c *config.Config) {
		c.SocketIO.MaxSessionsPerIP = 1
		c.TrustedProxies = []string{"127.0.0.1"}
	}, nil)
	url := roomtest.URL(g, "/socket.io/?EIO=4&transport=polling")
	handshake := func(client string) int {
		status, _ := roomtest.Get(t, url, http.Header{"X-Forwarded-For": {client}})
		return status
	}
	if s := handshake("10.0.0.1"); s != 200 {
		t.Fatalf("first session of 10.0.0.1: %d", s)
	}
	if s := handshake("10.0.0.1"); s != http.StatusTooManyRequests {
		t.Fatalf("second session of 10.0.0.1: %d", s)
	}
	if s := handshake("10.0.0.2"); s != 200 {
		t.Fatalf("first session of 10.0.0.2: %d", s)
	}
}
