package socketio_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/pkg/gateway"
)

// client is a raw Engine.IO-over-WebSocket client speaking Socket.IO
// packets as strings, for protocol-level tests.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, g *gateway.Gateway) *client {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	c := &client{t: t, ws: ws}
	if open := c.next(); !strings.HasPrefix(open, "0{") {
		t.Fatalf("open packet %q", open)
	}
	return c
}

// connect dials and connects the main namespace with auth (may be "").
func connect(t *testing.T, g *gateway.Gateway, auth string) *client {
	t.Helper()
	c := dial(t, g)
	c.send("0" + auth)
	if got := c.next(); !strings.HasPrefix(got, `0{"sid":"`) {
		t.Fatalf("connect: got %q", got)
	}
	return c
}

// send writes one Socket.IO packet as an Engine.IO message.
func (c *client) send(packet string) {
	c.t.Helper()
	c.raw("4" + packet)
}

func (c *client) raw(msg string) {
	c.t.Helper()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		c.t.Fatalf("send %q: %v", msg, err)
	}
}

// next returns the next Engine.IO message, answering pings on the way, with
// a leading "4" (message) removed.
func (c *client) next() string {
	c.t.Helper()
	m, err := c.read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

func (c *client) read() (string, error) {
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return "", err
		}
		switch m := string(b); {
		case m == "2":
			_ = c.ws.WriteMessage(websocket.TextMessage, []byte("3"))
		case strings.HasPrefix(m, "4"):
			return m[1:], nil
		default:
			return m, nil
		}
	}
}

// nextEvent skips update_data events and returns the next other packet.
func (c *client) nextOther() string {
	c.t.Helper()
	for {
		if m := c.next(); !strings.HasPrefix(m, `2["update_data",`) {
			return m
		}
	}
}

// closed reads until the socket closes and returns the close code (0
// without a close frame).
func (c *client) closed() int {
	for {
		if _, err := c.read(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return 0
		}
	}
}

// poller is a raw long-polling client.
type poller struct {
	t   *testing.T
	url string
}

func openPolling(t *testing.T, g *gateway.Gateway) *poller {
	t.Helper()
	base := "http://" + g.Addr().String() + "/socket.io/?EIO=4&transport=polling"
	status, body := httpDo(t, "GET", base, "")
	if status != 200 || !strings.HasPrefix(body, "0{") {
		t.Fatalf("handshake %d %q", status, body)
	}
	var open struct{ SID string }
	if err := json.Unmarshal([]byte(body[1:]), &open); err != nil {
		t.Fatal(err)
	}
	return &poller{t: t, url: base + "&sid=" + open.SID}
}

func (p *poller) post(body string) int {
	status, _ := httpDo(p.t, "POST", p.url, body)
	return status
}

// poll returns the packets of one GET.
func (p *poller) poll() []string {
	p.t.Helper()
	status, body := httpDo(p.t, "GET", p.url, "")
	if status != 200 {
		p.t.Fatalf("poll: %d %s", status, body)
	}
	return strings.Split(body, "\x1e")
}

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// errorPackets returns the error event and the ack the gateway sends for
// a refused event with ack id.
func errorPackets(ackID int, code string) (event, ack string) {
	return `2["error",{"code":"` + code + `"`, fmt.Sprintf(`3%d[{"ok":false,"error":{"code":"%s"`, ackID, code)
}
