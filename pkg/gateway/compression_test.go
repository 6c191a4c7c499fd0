package gateway_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/internal/sockettest"
)

// TestCompression: with compression on, a client that offers
// permessage-deflate gets large updates compressed (fewer bytes on the
// wire, same data) and small ones plain; a client that does not offer it
// gets everything plain.
func TestCompression(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.Compression.Enabled = true
	cfg.Compression.MinBytes = 512
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)

	dial := func(compress bool) (*roomtest.Client, *atomic.Int64) {
		wire := new(atomic.Int64)
		d := &websocket.Dialer{EnableCompression: compress, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			return sockettest.CountingConn{Conn: c, N: wire}, err
		}}
		c, _, err := roomtest.DialURL(t, "ws://"+g.Addr().String()+"/ws", nil, d)
		if err != nil {
			t.Fatal(err)
		}
		c.Join("sales")
		return c, wire
	}
	zipped, zippedWire := dial(true)
	plain, plainWire := dial(false)

	var sb strings.Builder
	sb.WriteString(`{"ts":1764124800000`)
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&sb, `,"region_%02d":%d`, i, 1000+i)
	}
	sb.WriteString("}")
	large := sb.String()
	for _, data := range []string{large, `{"small":1}`} {
		z0, p0 := zippedWire.Load(), plainWire.Load()
		if err := nc.Publish(salesSubject, []byte(data)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*roomtest.Client{zipped, plain} {
			if m := c.Expect("update"); string(m.Data) != data {
				t.Fatalf("got %.80s, want %.80s", m.Data, data)
			}
		}
		zBytes, pBytes := zippedWire.Load()-z0, plainWire.Load()-p0
		if data == large && zBytes*2 > pBytes {
			t.Errorf("large update: %d bytes compressed vs %d plain", zBytes, pBytes)
		}
		if data != large && zBytes != pBytes {
			t.Errorf("small update: %d bytes to the compressing client vs %d plain: it should not be compressed", zBytes, pBytes)
		}
	}
	if got := metric(t, g, "roomcast_compressed_messages_total"); got != 1 {
		t.Fatalf("roomcast_compressed_messages_total = %v, want 1 (the large update, to one client)", got)
	}
}

// TestCompressedWriteToStalledClient: a client that negotiated
// permessage-deflate and stops reading is closed within write_timeout + 1 s
// of the gateway's last successful write to it, although every frame it
// gets is a shared compressed one. Those used to be written without a
// deadline: the writer waited for ever (until the next heartbeat failed).
func TestCompressedWriteToStalledClient(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.Compression.Enabled = true
	cfg.Compression.MinBytes = 64
	cfg.Limits.MaxUpdateBytes = 256 << 10
	cfg.WriteTimeout = time.Second
	// The heartbeat must not be what ends the client.
	cfg.PingInterval = time.Minute
	cfg.PongTimeout = 30 * time.Second
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)

	// Compression negotiated, a tiny receive buffer, and never read.
	d := websocket.Dialer{EnableCompression: true, NetDial: sockettest.DialSmallRcvBuf}
	conn, resp, err := d.Dial("ws://"+g.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Fatalf("permessage-deflate not negotiated: %q", ext)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"join","room":"sales"}`)); err != nil {
		t.Fatal(err)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Members("sales"); n != 1 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})

	// 128 KiB updates that deflate shrinks little (random base64), every
	// 10 ms, until the client is gone: far more than the socket buffers hold.
	raw := make([]byte, 96<<10)
	_, _ = rand.Read(raw)
	pad := base64.StdEncoding.EncodeToString(raw)
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Add(1)
	go func() {
		defer pub.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = nc.Publish(salesSubject, []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, pad)))
			}
		}
	}()
	defer func() { close(stop); pub.Wait() }()

	// The gateway's last successful write is the last change of
	// roomcast_frames_sent_total; the blocked write began right after.
	frames, progress := 0.0, time.Now()
	bound := time.Now().Add(cfg.WriteTimeout + 15*time.Second)
	for metric(t, g, "roomcast_connections") != 0 {
		if time.Now().After(bound) {
			t.Fatalf("the stalled client is still connected %v after its last write", time.Since(progress))
		}
		if f := metric(t, g, "roomcast_frames_sent_total"); f != frames {
			frames, progress = f, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(progress)
	t.Logf("closed %v after the last write that went through (%v frames)", took, frames)
	if took > cfg.WriteTimeout+time.Second {
		t.Fatalf("closed %v after the last write; write_timeout is %v", took, cfg.WriteTimeout)
	}
	if n := metric(t, g, "roomcast_compressed_messages_total"); n == 0 {
		t.Fatal("nothing was sent compressed: the test did not exercise prepared writes")
	}
}
