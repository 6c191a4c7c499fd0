//go:build linux

package ws

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomcast/roomcast/internal/sockettest"
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
	d := websocket.Dialer{EnableCompression: true, NetDial: sockettest.DialSmallRcvBuf}
	client, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	conn := <-conns
	t.Cleanup(func() { conn.Close() })
	conn.EnableWriteCompression(false)
	return &Session{conn: conn, nc: conn.NetConn(), cfg: Config{MaxBatchBytes: 32 << 10, Compress: true, CompressMinBytes: 1},
		metrics: metrics.New(prometheus.NewRegistry()), log: slog.New(slog.DiscardHandler)}
}

// preparedUpdate is a 64 KiB update prepared for compression that deflate
// cannot shrink much (random base64), so the socket fills quickly.
func preparedUpdate(t *testing.T) outbox.Message {
	t.Helper()
	raw := make([]byte, 48<<10)
	_, _ = rand.Read(raw)
	data := []byte(`{"pad":"` + base64.StdEncoding.EncodeToString(raw) + `"}`)
	return outbox.Message{Pub: outbox.NewPublication("r", 0, 0, false, data, 0)}
}

type writeResult struct {
	took time.Duration // how long the failing write took
	err  error
}

// startWrites writes msg in batches of one with the given timeout until a
// write fails, on its own goroutine, so that a write without a deadline
// fails the test (awaitWrite) instead of hanging it. The goroutine ends at
// the first failed write, at the latest when the cleanups close the
// sockets.
func startWrites(s *Session, msg outbox.Message, timeout time.Duration) <-chan writeResult {
	done, _ := countedWrites(s, msg, timeout)
	return done
}

// countedWrites is startWrites that also counts the writes completed, so
// that a test can tell a blocked writer from a slow one.
func countedWrites(s *Session, msg outbox.Message, timeout time.Duration) (<-chan writeResult, *atomic.Int64) {
	done := make(chan writeResult, 1)
	var n atomic.Int64
	go func() {
		for {
			start := time.Now()
			if err := s.writeBatch([]outbox.Message{msg}, timeout); err != nil {
				done <- writeResult{time.Since(start), err}
				return
			}
			n.Add(1)
		}
	}()
	return done, &n
}

func awaitWrite(t *testing.T, done <-chan writeResult, bound time.Duration) writeResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(bound):
		t.Fatalf("no write failed within %v: writes to the stalled client are not bounded by their deadline", bound)
		return writeResult{}
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
	r := awaitWrite(t, startWrites(s, preparedUpdate(t), timeout), 15*time.Second)
	var ne net.Error
	if !errors.As(r.err, &ne) || !ne.Timeout() {
		t.Fatalf("write failed with %v, want a timeout", r.err)
	}
	if r.took > timeout+time.Second {
		t.Fatalf("the blocked write took %v, write timeout %v", r.took, timeout)
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
	r := awaitWrite(t, startWrites(s, preparedUpdate(t), time.Minute), 15*time.Second)
	if took := time.Since(start); took > tooSlowGrace+time.Second {
		t.Fatalf("writes went on for %v after the cut (grace %v): %v", took, tooSlowGrace, r.err)
	}
	if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Minute)); err == nil {
		t.Fatal("a ping was written with a one-minute deadline after the cut")
	}
}

// TestControlFrameKeepsWriteDeadline: a ping written while a data write is
// blocked on a client that stopped reading does not move the socket's
// deadline past the blocked write's. It used to set its own (timeout from
// now), which gave the blocked write up to twice write_timeout.
func TestControlFrameKeepsWriteDeadline(t *testing.T) {
	t.Parallel()
	s := stalledSession(t, false)
	// A small send buffer too: the kernel would otherwise grow it to
	// megabytes, and the "stalled" writer would go on writing, slowly, on
	// a loaded machine.
	if tc, ok := s.nc.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	raw := make([]byte, 48<<10)
	_, _ = rand.Read(raw)
	// A reply is never compressed: this one is 64 KiB of text.
	plain := outbox.Message{Reply: &outbox.Reply{Kind: outbox.Failed, Code: "pad", Message: base64.StdEncoding.EncodeToString(raw)}}
	const timeout = 2 * time.Second
	done, completed := countedWrites(s, plain, timeout)
	// Blocked: the same write has been in progress for a while (the same
	// deadline, and no write completed meanwhile: a writer that goes on
	// slowly would leave room for the ping between two writes).
	var due, writes int64
	stuckSince := time.Now()
	waitUntil(t, 10*time.Second, "the writer never blocked", func() bool {
		if d, w := s.writeDue.Load(), completed.Load(); d != due || d == 0 || w != writes {
			due, writes, stuckSince = d, w, time.Now()
			return false
		}
		return time.Since(stuckSince) > 200*time.Millisecond
	})
	pinged := make(chan error, 1)
	go func() {
		pinged <- s.conn.WriteControl(websocket.PingMessage, nil, s.controlDeadline(time.Minute))
	}()
	r := awaitWrite(t, done, 20*time.Second)
	if r.took > timeout+time.Second {
		t.Fatalf("the blocked write took %v, write timeout %v: the ping extended its deadline (err %v)", r.took, timeout, r.err)
	}
	if err := <-pinged; err == nil {
		t.Fatal("the ping was written to a client that reads nothing")
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
