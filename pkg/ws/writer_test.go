package ws

import (
	"context"
	"fmt"
	"io"
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

// BenchmarkWriteBatch measures the writer's cost per message for batches
// of 1, 8 and 32 queued updates written as one frame over a real loopback
// WebSocket, whose far end reads and discards the bytes.
func BenchmarkWriteBatch(b *testing.B) {
	pub := outbox.NewPublication("sales", 4242, 4238, false, []byte(`{"ts":1764124800000,"timestamp":"03:20:00","sales":4211.5,"orders":117}`), 1764124800000)
	frame := pub.JSON()
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s := loopbackSession(b)
			batch := make([]outbox.Message, n)
			for i := range batch {
				batch[i] = outbox.Message{Pub: pub}
			}
			b.ReportAllocs()
			b.SetBytes(int64(n * (len(frame) + 1)))
			for b.Loop() {
				if err := s.writeBatch(batch, 10*time.Second); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
		})
	}
}

// loopbackSession returns a session whose connection is the server side of
// a WebSocket on 127.0.0.1; the client side discards what it reads.
func loopbackSession(b *testing.B) *Session {
	s, _ := compressingSession(b, false)
	return s
}

// compressingSession is loopbackSession with permessage-deflate negotiated
// when compress is set; wire counts the bytes the client side reads.
func compressingSession(b *testing.B, compress bool) (*Session, *atomic.Int64) {
	b.Helper()
	wire := new(atomic.Int64)
	conns := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{WriteBufferPool: nil, EnableCompression: compress}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			b.Error(err)
			return
		}
		conns <- c
	}))
	b.Cleanup(srv.Close)
	d := websocket.Dialer{EnableCompression: compress, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return sockettest.CountingConn{Conn: c, N: wire}, err
	}}
	client, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	// Discard the raw bytes: the benchmarks measure the server's side, not
	// a client's frame parsing or decompression on the same cores.
	go func() { _, _ = io.Copy(io.Discard, client.NetConn()) }()
	conn := <-conns
	b.Cleanup(func() { conn.Close() })
	reg := prometheus.NewRegistry()
	conn.EnableWriteCompression(false)
	return &Session{conn: conn, nc: conn.NetConn(), cfg: Config{MaxBatchBytes: 32 << 10}, metrics: metrics.New(reg), log: slog.New(slog.DiscardHandler)}, wire
}

// BenchmarkCompression compares, per client, writing a 1.6 KB update:
// plain; compressed once and shared (what the gateway does: the cost per
// client after the first is a write of the cached compressed frame); and
// compressed per client (what a gateway without prepared frames pays).
// wire-B/msg is the bytes each client receives.
func BenchmarkCompression(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"ts":1764124800000`)
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&sb, `,"region_%02d_sales":%d.%02d`, i, 1000+i*37, i)
	}
	sb.WriteString("}")
	pub := outbox.NewPublication("kpis", 4242, 4241, false, []byte(sb.String()), 1764124800000)
	frame := pub.JSON()
	cases := []struct {
		name     string
		compress bool
		write    func(s *Session) error
	}{
		{"plain", false, func(s *Session) error { return s.conn.WriteMessage(websocket.TextMessage, frame) }},
		{"shared-compressed", true, func(s *Session) error {
			return s.writeBatch([]outbox.Message{{Pub: pub}}, 10*time.Second) // prepared once, on the first write
		}},
		{"per-client-compressed", true, func(s *Session) error {
			s.conn.EnableWriteCompression(true)
			return s.conn.WriteMessage(websocket.TextMessage, frame)
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			s, wire := compressingSession(b, c.compress)
			s.cfg.Compress, s.cfg.CompressMinBytes = c.compress, 1
			b.ReportAllocs()
			for b.Loop() {
				if err := c.write(s); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(wire.Load())/float64(b.N), "wire-B/msg")
		})
	}
}
