package session

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
)

// stalledSession returns a session, with permessage-deflate negotiated,
// whose client never reads and has a tiny receive buffer, so that the
// server's writes soon block. With limit, the server accepts through
// Listener, as the gateway does.
func stalledSession(t *testing.T, limit bool) *Session {
	t.Helper()
	conns := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{EnableCompression: true}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		conns <- c
	}))
	if limit {
		srv.Listener = Listener(srv.Listener)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	d := websocket.Dialer{EnableCompression: true, NetDial: func(network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			}); err != nil {
				return err
			}
			return serr
		}}
		return nd.Dial(network, addr)
	}}
	client, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	conn := <-conns
	t.Cleanup(func() { conn.Close() })
	conn.EnableWriteCompression(false)
	return &Session{conn: conn, nc: conn.NetConn(), cfg: Config{MaxBatchBytes: 32 << 10, Compress: true},
		metrics: metrics.New(prometheus.NewRegistry()), log: slog.New(slog.DiscardHandler)}
}

// preparedUpdate is a 64 KiB update prepared for compression that deflate
// cannot shrink much (random base64), so the socket fills quickly.
func preparedUpdate(t *testing.T) outbox.Message {
	t.Helper()
	raw := make([]byte, 48<<10)
	_, _ = rand.Read(raw)
	frame := []byte(`{"op":"update","room":"r","data":{"pad":"` + base64.StdEncoding.EncodeToString(raw) + `"}}`)
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, frame)
	if err != nil {
		t.Fatal(err)
	}
	return outbox.Message{Frame: frame, Room: "r", Update: true, Meta: &outbox.UpdateMeta{Prepared: pm}}
}

// writeUntilError writes msg in batches of one with the given timeout
// until a write fails, on its own goroutine so that a write without a
// deadline fails the test instead of hanging it. It returns how long the
// failing write took, and its error.
func writeUntilError(t *testing.T, s *Session, msg outbox.Message, timeout, bound time.Duration) (time.Duration, error) {
	t.Helper()
	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	go func() {
		for {
			start := time.Now()
			if err := s.writeBatch([]outbox.Message{msg}, timeout); err != nil {
				done <- result{err, time.Since(start)}
				return
			}
		}
	}()
	select {
	case r := <-done:
		return r.took, r.err
	case <-time.After(bound):
		// The writer goroutine ends when the cleanups close the sockets.
		t.Fatalf("no write failed within %v: a write to the stalled client has no deadline", bound)
		return 0, nil
	}
}

// TestPreparedWriteHonoursWriteTimeout: a compressed (prepared) frame to a
// client that stopped reading fails at the write deadline. gorilla writes
// prepared frames under its own deadline, which was never set, so the
// write used to wait for ever.
func TestPreparedWriteHonoursWriteTimeout(t *testing.T) {
	t.Parallel()
	s := stalledSession(t, false)
	const timeout = 500 * time.Millisecond
	took, err := writeUntilError(t, s, preparedUpdate(t), timeout, 15*time.Second)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("write failed with %v, want a timeout", err)
	}
	if took > timeout+time.Second {
		t.Fatalf("the blocked write took %v, write timeout %v", took, timeout)
	}
	if n := testCounter(t, s.metrics.CompressedMessages); n == 0 {
		t.Fatal("no frame was sent compressed: the test did not exercise prepared writes")
	}
}

// TestCutWritesHolds: after a 4008 cut, neither the writer's next deadline
// nor the one gorilla sets for a prepared frame or a ping can move the
// socket's deadline past tooSlowGrace (a plain SetWriteDeadline cut used to
// be undone by the very next write).
func TestCutWritesHolds(t *testing.T) {
	t.Parallel()
	s := stalledSession(t, true)
	s.cutWrites()
	start := time.Now()
	_, err := writeUntilError(t, s, preparedUpdate(t), time.Minute, 15*time.Second)
	if took := time.Since(start); took > tooSlowGrace+time.Second {
		t.Fatalf("writes went on for %v after the cut (grace %v): %v", took, tooSlowGrace, err)
	}
	if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Minute)); err == nil {
		t.Fatal("a ping was written with a one-minute deadline after the cut")
	}
}

// testCounter reads a counter's value.
func testCounter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatal(mfs, err)
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}
