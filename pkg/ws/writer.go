package ws

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

var (
	newline    = []byte{'\n'}
	errTooSlow = errors.New("client too slow")
)

// kick makes sure a writer goroutine is running; the outbox calls it after
// every push, Close after starting to close. At most one writer runs.
func (s *Session) kick() {
	if s.lp.loop != nil {
		s.schedule() // the loop writer: no goroutine of its own
		return
	}
	if s.writing.CompareAndSwap(false, true) {
		go s.writeLoop()
	}
}

// writeLoop writes what is queued, as batched frames, until the outbox is
// empty; then it ends, so an idle connection holds no writer goroutine.
// When the session is closing it flushes, sends the close frame and waits
// for the answer.
func (s *Session) writeLoop() {
	// Let the updates of one producer tick (several rooms, fanned out one
	// after another) gather, so that they leave in one frame and one
	// write: the write, not the encoding, is what a delivery costs.
	if d := s.cfg.CoalesceDelay; d > 0 && !s.isClosing() {
		time.Sleep(d)
	}
	var batch []outbox.Message
	for {
		if s.isEnded() {
			return // the writing flag stays set: nothing may start again
		}
		if s.isClosing() {
			s.finish()
			return
		}
		var overflowed bool
		batch, overflowed = s.box.Take(batch)
		if overflowed {
			continue // overflowed() has begun the close
		}
		if len(batch) == 0 {
			s.writing.Store(false)
			// A push (or a replay's wake, outbox.Wake) between Take and
			// Store found the flag set and did not start a writer; take
			// over its work.
			if (s.box.Busy() || s.isClosing()) && s.writing.CompareAndSwap(false, true) {
				continue
			}
			return
		}
		if err := s.writeBatch(batch, s.cfg.WriteTimeout); err != nil {
			s.end(err)
			return
		}
		clear(batch)
		batch = batch[:0]
	}
}

// finish flushes what is queued, sends the close frame and gives the client
// closeGrace to answer it; then the session ends.
func (s *Session) finish() {
	deadline := time.Now().Add(closeGrace)
	if s.closeCode != protocol.CloseTooSlow {
		batch, overflowed := s.box.Take(nil)
		if !overflowed && s.writeBatch(batch, closeGrace) != nil {
			s.end(errors.New("flush before close failed"))
			return
		}
	}
	msg := websocket.FormatCloseMessage(s.closeCode, s.closeReason)
	if err := s.conn.WriteControl(websocket.CloseMessage, msg, deadline); err != nil {
		s.end(err)
		return
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-s.peerClosed: // also closed when the session ends
	case <-t.C:
	}
	s.end(nil)
}

// writeBatch writes the batch as few frames as MaxBatchBytes allows, the
// messages of a frame separated by "\n". A message prepared for
// compression goes in a frame of its own, compressed once for all clients,
// when this client negotiated permessage-deflate; everything else is sent
// uncompressed.
//
// Plain frames are framed here and written with one Write on the socket
// (a pooled buffer, held only during the write): per frame that saves
// gorilla's writer setup and a deadline change, which the profile of W3
// showed as a fifth of the gateway's own time. gorilla still writes the
// control frames and the prepared ones; the socket serialises whole
// writes, so frames never interleave. Every write has a deadline: ours
// here, given to gorilla for prepared frames; the caller's for control
// frames; and a 4008 caps them all (cutWrites).
func (s *Session) writeBatch(batch []outbox.Message, timeout time.Duration) error {
	defer s.writeDue.Store(0)
	for len(batch) > 0 {
		if s.isClosing() && s.closeCode == protocol.CloseTooSlow {
			return errTooSlow
		}
		if err := s.ensureDeadline(timeout); err != nil {
			return err
		}
		s.writeDue.Store(s.wdl.UnixNano())
		if pm := s.prepared(&batch[0]); pm != nil {
			// gorilla sets the socket's deadline to its own before it
			// writes a prepared frame (none, unless told): give it ours.
			_ = s.conn.SetWriteDeadline(s.wdl)
			s.conn.EnableWriteCompression(true)
			err := s.conn.WritePreparedMessage(pm)
			s.conn.EnableWriteCompression(false)
			if err != nil {
				return err
			}
			s.sent(batch[:1], batch[0].Size())
			s.metrics.CompressedMessages.Inc()
			batch = batch[1:]
			continue
		}
		bp := frameBufs.Get().(*[]byte)
		b, start, n, size := s.frameMessages(*bp, batch)
		_, err := s.nc.Write(b[start:])
		if cap(b) <= maxPooledFrame {
			*bp = b
			frameBufs.Put(bp)
		}
		if err != nil {
			return err
		}
		s.sent(batch[:n], size)
		batch = batch[n:]
	}
	return nil
}

// frameMessages frames the first messages of batch as one text frame in
// buf's space: as many as MaxBatchBytes allows (at least one), joined by
// "\n", stopping before a message that goes prepared. It returns the
// buffer, where the frame starts in it, how many messages it holds and
// its payload size.
func (s *Session) frameMessages(buf []byte, batch []outbox.Message) (b []byte, start, n, size int) {
	b = append(buf[:0], make([]byte, maxServerHeader)...)
	for n < len(batch) && (n == 0 || len(b)-maxServerHeader+batch[n].Size() < s.cfg.MaxBatchBytes) {
		if n > 0 {
			if s.prepared(&batch[n]) != nil {
				break
			}
			b = append(b, '\n')
		}
		b = batch[n].AppendJSON(b)
		n++
	}
	size = len(b) - maxServerHeader
	return b, putHeader(b[:maxServerHeader], size), n, size
}

// prepared returns m's frame prepared for permessage-deflate when this
// client negotiated it and m is an update large enough to be worth it;
// else nil. The frame is made once per update and shared by every client
// that negotiated compression: gorilla compresses it on its first write.
func (s *Session) prepared(m *outbox.Message) *websocket.PreparedMessage {
	if !s.cfg.Compress || m.Pub == nil || s.cfg.CompressMinBytes <= 0 || m.Pub.Size() < s.cfg.CompressMinBytes {
		return nil
	}
	pm, _ := m.Pub.Encoded(outbox.EncWSDeflate, preparedFrame).(*websocket.PreparedMessage)
	return pm
}

func preparedFrame(p *outbox.Publication) any {
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, p.JSON())
	if err != nil {
		return nil // never for a text message; then the update goes plain
	}
	return pm
}

// maxServerHeader is the largest header of an unmasked server frame.
const maxServerHeader = 10

// maxPooledFrame: larger buffers (a batch of large updates) are left to
// the garbage collector rather than kept in the pool.
const maxPooledFrame = 64 << 10

var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// putHeader writes the header of an unmasked final text frame of size
// payload bytes at the end of hdr and returns where it starts.
func putHeader(hdr []byte, size int) int {
	switch {
	case size < 126:
		hdr[8], hdr[9] = 0x81, byte(size)
		return 8
	case size < 1<<16:
		hdr[6], hdr[7] = 0x81, 126
		binary.BigEndian.PutUint16(hdr[8:], uint16(size))
		return 6
	}
	hdr[0], hdr[1] = 0x81, 127
	binary.BigEndian.PutUint64(hdr[2:], uint64(size))
	return 0
}

// ensureDeadline keeps the socket's write deadline at least half of
// timeout ahead, setting it only when it is not: a deadline change per
// frame is a cost of its own.
func (s *Session) ensureDeadline(timeout time.Duration) error {
	now := time.Now()
	if s.wdlFor == timeout && s.wdl.Sub(now) >= timeout/2 {
		return nil
	}
	s.wdl, s.wdlFor = now.Add(timeout), timeout
	return s.nc.SetWriteDeadline(s.wdl)
}

// controlDeadline is the deadline for a control frame written beside the
// writer (a ping, a pong): timeout from now, but not past the deadline of
// a data write in progress. The socket has one write deadline, and setting
// a later one would give a write blocked on a client that stopped reading
// more than write_timeout.
func (s *Session) controlDeadline(timeout time.Duration) time.Time {
	now := time.Now()
	d := now.Add(timeout)
	if due := s.writeDue.Load(); due > now.UnixNano() && due < d.UnixNano() {
		return time.Unix(0, due)
	}
	return d
}

// sent counts one frame holding msgs (size payload bytes, before any
// compression).
func (s *Session) sent(msgs []outbox.Message, size int) {
	s.metrics.FramesSent.Inc()
	s.metrics.MessagesSent.Add(float64(len(msgs)))
	s.metrics.BytesSent.Add(float64(size))
	s.metrics.BatchMessages.Observe(float64(len(msgs)))
	// One observation per frame, of its oldest update: the frame's worst
	// latency, without a shared histogram update per message. Snapshots
	// and replays are apart: their age is not latency.
	s.metrics.ObserveSent(time.Now(), msgs)
}
