// Package roomtest is the test harness shared by roomcast's tests: real
// embedded NATS servers on random ports, real gateways on 127.0.0.1, real
// WebSocket clients, and a poll-until-deadline helper in place of sleeps.
package roomtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
)

// Eventually polls cond every 10 ms until it returns nil or timeout passes,
// then fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Logger returns a logger that writes to the test log when ROOMCAST_TEST_LOG
// is set, and discards otherwise.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("ROOMCAST_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// StartNATS starts a nats-server with JetStream on a random port. It is
// shut down when the test ends.
func StartNATS(t testing.TB) *server.Server {
	t.Helper()
	return StartNATSWith(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
}

// StartNATSWith starts a nats-server with opts (Host and Port default to a
// random port on 127.0.0.1).
func StartNATSWith(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// Connect opens a plain NATS connection to ns, closed when the test ends.
func Connect(t testing.TB, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Config returns a gateway configuration for tests: random ports on
// 127.0.0.1, NATS at url (embedded if empty) and a temporary store.
func Config(t testing.TB, url string) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATS.URL = url
	cfg.NATS.Embedded.Listen = "127.0.0.1:0"
	cfg.NATS.Embedded.StoreDir = t.TempDir()
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.DrainWindow = 0 // tests that drain set their own
	cfg.RoomLinger = 0  // tests that linger set their own
	// Every test client comes from 127.0.0.1.
	cfg.Limits.MaxConnectionsPerIP = config.DefaultMaxConnections
	cfg.Limits.MaxTCPConnectionsPerIP = config.DefaultMaxConnections
	return cfg
}

// StartGateway starts a gateway and shuts it down when the test ends.
func StartGateway(t testing.TB, cfg config.Config) *gateway.Gateway {
	t.Helper()
	return StartGatewayWith(t, cfg, gateway.Options{Log: Logger(t)})
}

// StartGatewayWith is StartGateway with the test's own options (a log
// handler to read, an injected io_uring setup); it waits until the
// gateway is ready as StartGateway does.
func StartGatewayWith(t testing.TB, cfg config.Config, opts gateway.Options) *gateway.Gateway {
	t.Helper()
	g, err := gateway.Start(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	Eventually(t, 10*time.Second, func() error {
		if ok, why := g.Ready(); !ok {
			return errors.New(why)
		}
		if !g.CatalogSynced() {
			return errors.New("catalogue not read yet")
		}
		return nil
	})
	return g
}

// URL returns http://addr/path for a gateway.
func URL(g *gateway.Gateway, path string) string {
	return "http://" + g.Addr().String() + path
}

// Subscriptions counts the subscriptions on ns that a message published to
// subject would reach.
func Subscriptions(ns *server.Server, subject string) int {
	sz, err := ns.Subsz(&server.SubszOptions{Subscriptions: true, Test: subject, Limit: 1 << 20})
	if err != nil {
		panic(err)
	}
	return len(sz.Subs)
}

// SubscriptionsUnder counts the subscriptions on ns whose subject starts
// with prefix: all room subscriptions, for prefix "roomcast.room.".
func SubscriptionsUnder(ns *server.Server, prefix string) int {
	sz, err := ns.Subsz(&server.SubszOptions{Subscriptions: true, Limit: 1 << 20})
	if err != nil {
		panic(err)
	}
	n := 0
	for _, s := range sz.Subs {
		if strings.HasPrefix(s.Subject, prefix) {
			n++
		}
	}
	return n
}

// WaitSubscriptions waits until Subscriptions(ns, subject) == want.
func WaitSubscriptions(t testing.TB, ns *server.Server, subject string, want int) {
	t.Helper()
	Eventually(t, 5*time.Second, func() error {
		if n := Subscriptions(ns, subject); n != want {
			return fmt.Errorf("%d subscriptions on %s, want %d", n, subject, want)
		}
		return nil
	})
}

// Msg is one server message as a client sees it.
type Msg struct {
	Op      string          `json:"op"`
	Room    string          `json:"room"`
	ID      *int64          `json:"id"`
	Seq     uint64          `json:"seq"`
	Prev    *uint64         `json:"prev"`
	Missed  bool            `json:"missed"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// Client is a WebSocket client of the native protocol.
type Client struct {
	t       testing.TB
	Conn    *websocket.Conn
	pending []Msg
	// Frames counts the WebSocket frames read.
	Frames int
}

// Dial connects a client to g's /ws; it is closed when the test ends.
func Dial(t testing.TB, g *gateway.Gateway) *Client {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	t.Cleanup(func() { conn.Close() })
	return &Client{t: t, Conn: conn}
}

// DialURL connects a client to a WebSocket URL with extra request headers
// and dialer settings (nil: gorilla's defaults). It returns the handshake
// response, which tells why a refused handshake was refused.
func DialURL(t testing.TB, url string, header http.Header, d *websocket.Dialer) (*Client, *http.Response, error) {
	t.Helper()
	if d == nil {
		d = websocket.DefaultDialer
	}
	conn, resp, err := d.Dial(url, header)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { conn.Close() })
	return &Client{t: t, Conn: conn}, resp, nil
}

// Send writes one text frame.
func (c *Client) Send(frame string) {
	c.t.Helper()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.Conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.t.Fatalf("send %s: %v", frame, err)
	}
}

// Next returns the next message, reading a frame if needed.
func (c *Client) Next(timeout time.Duration) (Msg, error) {
	if len(c.pending) == 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(timeout))
		typ, frame, err := c.Conn.ReadMessage()
		if err != nil {
			return Msg{}, err
		}
		if typ != websocket.TextMessage {
			return Msg{}, fmt.Errorf("frame type %d", typ)
		}
		c.Frames++
		for _, line := range strings.Split(string(frame), "\n") {
			var m Msg
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				return Msg{}, fmt.Errorf("message %q: %v", line, err)
			}
			c.pending = append(c.pending, m)
		}
	}
	m := c.pending[0]
	c.pending = c.pending[1:]
	return m, nil
}

// Expect returns the next message and fails unless its op is op.
func (c *Client) Expect(op string) Msg {
	c.t.Helper()
	m, err := c.Next(5 * time.Second)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", op, err)
	}
	if m.Op != op {
		c.t.Fatalf("got %+v, want op %s", m, op)
	}
	return m
}

// Join joins a room and waits for the reply.
func (c *Client) Join(room string) {
	c.t.Helper()
	c.Send(`{"op":"join","room":"` + room + `"}`)
	if m := c.Expect("joined"); m.Room != room {
		c.t.Fatalf("joined %q, want %q", m.Room, room)
	}
}

// ExpectClose reads until the connection closes and returns the close
// code; it fails the test if the connection ends without a close frame.
func (c *Client) ExpectClose(timeout time.Duration) int {
	c.t.Helper()
	code := c.ExpectCloseCode(timeout)
	if code == 0 {
		c.t.Fatal("connection ended without a close frame")
	}
	return code
}

// ExpectCloseCode reads until the connection closes and returns the close
// code, or 0 if it ended without a close frame. Unlike ExpectClose it may
// be called from any goroutine.
func (c *Client) ExpectCloseCode(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		_ = c.Conn.SetReadDeadline(deadline)
		_, _, err := c.Conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return 0
	}
}

// Get performs an HTTP GET and returns status and body.
func Get(t testing.TB, url string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// FreePort returns a port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Goroutines returns the number of goroutines now.
func Goroutines() int { return runtime.NumGoroutine() }

// WaitGoroutines waits until there are no more goroutines than baseline,
// and on failure prints the goroutines that are left.
func WaitGoroutines(t testing.TB, baseline int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
