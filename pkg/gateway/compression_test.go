package gateway_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
)

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

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
			return countingConn{c, wire}, err
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
