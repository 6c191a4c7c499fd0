package session

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
)

// BenchmarkWriteBatch measures the writer's cost per message for batches
// of 1, 8 and 32 queued updates written as one frame over a real loopback
// WebSocket, whose far end reads and discards.
func BenchmarkWriteBatch(b *testing.B) {
	frame := []byte(`{"op":"update","room":"sales","seq":4242,"prev":4238,"data":{"ts":1764124800000,"timestamp":"03:20:00","sales":4211.5,"orders":117}}`)
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s := loopbackSession(b)
			batch := make([]outbox.Message, n)
			for i := range batch {
				batch[i] = outbox.Message{Frame: frame, Room: "sales", Update: true}
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
	b.Helper()
	conns := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{WriteBufferPool: nil}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			b.Error(err)
			return
		}
		conns <- c
	}))
	b.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	go func() {
		for {
			_, r, err := client.NextReader()
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, r)
		}
	}()
	conn := <-conns
	b.Cleanup(func() { conn.Close() })
	reg := prometheus.NewRegistry()
	return &Session{conn: conn, cfg: Config{MaxBatchBytes: 32 << 10}, metrics: metrics.New(reg), log: slog.New(slog.DiscardHandler),
		closing: make(chan struct{}), readerDone: make(chan struct{})}
}
