package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// transport is one client connection: to the gateway's /ws (WebSocket) or
// to the raw server (plain TCP carrying the same server frames).
type transport interface {
	// send writes one command.
	send(cmd []byte) error
	// next reads the next data message into buf[:0], growing it if needed.
	next(buf []byte) ([]byte, error)
	// setReadDeadline bounds next; the zero time removes the bound.
	setReadDeadline(t time.Time) error
	close()
}

// closeError is how the raw transport reports a close frame, like
// gorilla's *websocket.CloseError.
type closeError struct{ code int }

func (e *closeError) Error() string { return "close " + strconv.Itoa(e.code) }

// ipBindAddressNoPort (IP_BIND_ADDRESS_NO_PORT) defers the port choice of a
// socket bound to a source address to connect(), so each source address
// gets the ephemeral range per destination instead of once in total.
const ipBindAddressNoPort = 24

func netDialer(cfg *Config, conn int) *net.Dialer {
	d := &net.Dialer{Timeout: cfg.Timeout}
	if n := cfg.sourceIPs(); n > 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+conn%n))}
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			return errors.Join(err, serr)
		}
	}
	return d
}

// The client's own buffers: small reads (server frames of a few hundred
// bytes) and a write buffer shared through a pool, so idle connections
// cost the client little.
var wsWritePool sync.Pool

func dial(ctx context.Context, cfg *Config, conn int) (transport, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	nd := netDialer(cfg, conn)
	if cfg.SocketIO != "" {
		return dialSocketIO(ctx, cfg, nd)
	}
	if cfg.Raw {
		c, err := nd.DialContext(ctx, "tcp", cfg.Addr)
		if err != nil {
			return nil, err
		}
		return &rawTransport{conn: c, r: bufio.NewReaderSize(c, 2048)}, nil
	}
	d := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: cfg.Timeout,
		ReadBufferSize:   2048,
		WriteBufferSize:  512,
		WriteBufferPool:  &wsWritePool,
	}
	c, resp, err := d.DialContext(ctx, "ws://"+cfg.Addr+"/ws", nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	return &wsTransport{c: c}, nil
}

type wsTransport struct{ c *websocket.Conn }

func (t *wsTransport) send(cmd []byte) error { return t.c.WriteMessage(websocket.TextMessage, cmd) }

func (t *wsTransport) next(buf []byte) ([]byte, error) {
	for {
		typ, r, err := t.c.NextReader()
		if err != nil {
			return buf, err
		}
		if typ != websocket.TextMessage {
			_, _ = io.Copy(io.Discard, r)
			continue
		}
		return readAll(r, buf[:0])
	}
}

func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (t *wsTransport) setReadDeadline(d time.Time) error { return t.c.SetReadDeadline(d) }
func (t *wsTransport) close()                            { _ = t.c.NetConn().Close() }

// rawTransport speaks to `loadgen rawserver`: commands are JSON lines,
// server messages are unmasked WebSocket frames, as the gateway writes
// them, so both runs read the same bytes.
type rawTransport struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
	wbuf []byte
}

func (t *rawTransport) send(cmd []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.wbuf = append(append(t.wbuf[:0], cmd...), '\n')
	_, err := t.conn.Write(t.wbuf)
	return err
}

func (t *rawTransport) next(buf []byte) ([]byte, error) {
	buf = buf[:0]
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(t.r, hdr[:2]); err != nil {
			return buf, err
		}
		fin, op := hdr[0]&0x80 != 0, hdr[0]&0x0f
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(t.r, hdr[:2]); err != nil {
				return buf, err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(t.r, hdr[:8]); err != nil {
				return buf, err
			}
			n = binary.BigEndian.Uint64(hdr[:8])
		}
		if n > 64<<20 {
			return buf, fmt.Errorf("frame of %d bytes", n)
		}
		start := len(buf)
		buf = slices.Grow(buf, int(n))[:start+int(n)]
		if _, err := io.ReadFull(t.r, buf[start:]); err != nil {
			return buf, err
		}
		switch op {
		case 0x8:
			code := 1005
			if n >= 2 {
				code = int(binary.BigEndian.Uint16(buf[start:]))
			}
			return buf[:0], &closeError{code}
		case 0x9, 0xa: // ping, pong: the raw server sends none
			buf = buf[:start]
			continue
		}
		if fin {
			return buf, nil
		}
	}
}

func (t *rawTransport) setReadDeadline(d time.Time) error { return t.conn.SetReadDeadline(d) }
func (t *rawTransport) close()                            { _ = t.conn.Close() }

// disconnectReason names why a connection ended, for the report.
func disconnectReason(err error) string {
	var ce *websocket.CloseError
	var re *closeError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return "close_" + strconv.Itoa(ce.Code)
	case errors.As(err, &re):
		return "close_" + strconv.Itoa(re.code)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}
