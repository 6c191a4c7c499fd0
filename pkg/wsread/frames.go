// Package wsread reads WebSocket connections without a goroutine per
// connection: a push parser for what clients send (Reader) and, on Linux,
// a Poller (one epoll instance and one goroutine, shared by a gateway's
// connections) that calls a connection back when its socket has become
// readable. Both the native /ws sessions (package session) and Engine.IO's
// WebSocket transport (package engineio) read through it; writing is
// theirs.
//
// A connection that cannot be polled (TLS, other systems) keeps a reader
// goroutine that blocks in Read and feeds the same Reader.
package wsread

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"io"
	"unicode/utf8"

	"github.com/roomcast/roomcast/pkg/protocol"
)

// WebSocket opcodes (RFC 6455 §5.2), as Feed reports them.
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// FrameError is a protocol violation by the client; the connection must
// be closed with Code.
type FrameError struct {
	Code   int
	Reason string
}

func (e *FrameError) Error() string { return e.Reason }

func violation(code int, reason string) error { return &FrameError{Code: code, Reason: reason} }

// Reader parses what a client sends: masked frames, fragmented
// messages, control frames, and permessage-deflate messages (RSV1) when
// that was negotiated. It is fed bytes as they arrive and keeps only an
// unfinished frame between calls, so an idle connection holds no buffer.
//
// The reading side is ours rather than gorilla's so that a connection
// needs no goroutine blocked in Read: bytes are pushed in when the socket
// is readable. Writing stays with gorilla.
//
// The zero Reader refuses every message; set MaxMessage (and Deflate) before
// the first Feed. One goroutine at a time may use a Reader.
type Reader struct {
	MaxMessage int  // largest message, after reassembly and inflation
	Deflate    bool // permessage-deflate negotiated (no context takeover)

	buf        []byte // unparsed bytes: at most one unfinished frame
	msg        []byte // the fragments of a message so far
	msgOp      byte   // its opcode, while fragmented
	msgDeflate bool   // its first frame had RSV1
	inMessage  bool
	broken     bool // after a violation: everything else is discarded
}

// maxHeader is the largest frame header a client sends: 2 bytes, 8 of
// extended length, 4 of mask.
const maxHeader = 14

// Feed parses p and calls emit for each complete message (text or binary,
// reassembled and inflated) and each control frame. An error is a protocol
// violation (*FrameError) or emit's error; the connection must then end.
func (r *Reader) Feed(p []byte, emit func(op byte, payload []byte) error) error {
	if r.broken {
		return nil
	}
	data := p
	if len(r.buf) > 0 {
		r.buf = append(r.buf, p...)
		data = r.buf
	}
	for {
		n, err := r.frame(data, emit)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		data = data[n:]
	}
	// Keep the unfinished frame, copied so that p can be reused.
	switch {
	case len(data) == 0:
		r.buf = r.buf[:0]
		if cap(r.buf) > 4096 {
			r.buf = nil
		}
	case len(r.buf) > 0 && &data[0] == &r.buf[len(r.buf)-len(data)]:
		r.buf = r.buf[:copy(r.buf, data)]
	default:
		r.buf = append(r.buf[:0], data...)
	}
	return nil
}

// frame parses one frame from the start of b and returns its length, or 0
// when b does not hold a whole frame yet.
func (r *Reader) frame(b []byte, emit func(op byte, payload []byte) error) (int, error) {
	if len(b) < 2 {
		return 0, nil
	}
	fin, rsv1, op := b[0]&0x80 != 0, b[0]&0x40 != 0, b[0]&0x0F
	if b[0]&0x30 != 0 || rsv1 && !r.Deflate {
		return 0, violation(protocol.CloseProtocolError, "reserved bits set")
	}
	if b[1]&0x80 == 0 {
		return 0, violation(protocol.CloseProtocolError, "client frames must be masked")
	}
	length, hdr := uint64(b[1]&0x7F), 2
	switch length {
	case 126:
		if len(b) < 4 {
			return 0, nil
		}
		length, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return 0, nil
		}
		length, hdr = binary.BigEndian.Uint64(b[2:]), 10
	}
	control := op&0x8 != 0
	switch {
	case control && (!fin || length > 125):
		return 0, violation(protocol.CloseProtocolError, "control frames must be whole and at most 125 bytes")
	case control && rsv1:
		return 0, violation(protocol.CloseProtocolError, "control frames cannot be compressed")
	case length > uint64(r.MaxMessage) || len(r.msg)+int(length) > r.MaxMessage:
		return 0, violation(protocol.CloseMessageTooBig, "frame too large")
	}
	if len(b) < hdr+4+int(length) {
		return 0, nil
	}
	mask := b[hdr : hdr+4]
	payload := b[hdr+4 : hdr+4+int(length)]
	for i := range payload {
		payload[i] ^= mask[i&3]
	}
	n := hdr + 4 + int(length)

	switch op {
	case OpClose, OpPing, OpPong:
		return n, emit(op, payload)
	case OpText, OpBinary:
		if r.inMessage {
			return 0, violation(protocol.CloseProtocolError, "new message inside a fragmented one")
		}
		if fin {
			return n, r.message(op, rsv1, payload, emit)
		}
		r.inMessage, r.msgOp, r.msgDeflate = true, op, rsv1
		r.msg = append(r.msg[:0], payload...)
		return n, nil
	case OpContinuation:
		if !r.inMessage {
			return 0, violation(protocol.CloseProtocolError, "continuation without a message")
		}
		if rsv1 {
			return 0, violation(protocol.CloseProtocolError, "RSV1 on a continuation frame")
		}
		r.msg = append(r.msg, payload...)
		if !fin {
			return n, nil
		}
		msg := r.msg
		r.inMessage, r.msg = false, nil
		return n, r.message(r.msgOp, r.msgDeflate, msg, emit)
	}
	return 0, violation(protocol.CloseProtocolError, "unknown opcode")
}

// message inflates a compressed message and checks text is UTF-8.
func (r *Reader) message(op byte, compressed bool, payload []byte, emit func(byte, []byte) error) error {
	if compressed {
		var err error
		if payload, err = inflate(payload, r.MaxMessage); err != nil {
			return err
		}
	}
	if op == OpText && !utf8.Valid(payload) {
		return violation(protocol.CloseInvalidPayload, "text frame is not valid UTF-8")
	}
	return emit(op, payload)
}

// deflateTail ends every permessage-deflate message (RFC 7692 §7.2.2).
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// Break makes the Reader discard everything fed from now on: after a
// violation the stream cannot be parsed further, but the connection may
// still be closing.
func (r *Reader) Break() { r.broken = true }

// inflate decompresses one message, refusing more than limit bytes (a
// small compressed frame can expand enormously).
func inflate(p []byte, limit int) ([]byte, error) {
	fr := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateTail)))
	defer fr.Close()
	out, err := io.ReadAll(io.LimitReader(fr, int64(limit)+1))
	switch {
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return nil, violation(protocol.CloseInvalidPayload, "bad compressed data")
	case len(out) > limit:
		return nil, violation(protocol.CloseMessageTooBig, "message too large")
	}
	return out, nil
}

// ValidCloseCode reports whether a peer may send close code c (RFC 6455
// §7.4); a close frame with another code is answered with 1002.
func ValidCloseCode(c int) bool {
	switch {
	case c >= 1000 && c <= 1003, c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}
