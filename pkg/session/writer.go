package session

import (
	"errors"
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
	if s.writing.CompareAndSwap(false, true) {
		go s.writeLoop()
	}
}

// writeLoop writes what is queued, as batched frames, until the outbox is
// empty; then it ends, so an idle connection holds no writer goroutine.
// When the session is closing it flushes, sends the close frame and waits
// for the answer.
func (s *Session) writeLoop() {
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
			// A push between Take and Store found the flag set and did not
			// start a writer; take over its work.
			if n, _ := s.box.Len(); (n > 0 || s.isClosing()) && s.writing.CompareAndSwap(false, true) {
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
func (s *Session) writeBatch(batch []outbox.Message, timeout time.Duration) error {
	for len(batch) > 0 {
		if err := s.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		if s.isClosing() && s.closeCode == protocol.CloseTooSlow {
			return errTooSlow
		}
		if pm := batch[0].Prepared; pm != nil && s.cfg.Compress {
			s.conn.EnableWriteCompression(true)
			err := s.conn.WritePreparedMessage(pm)
			s.conn.EnableWriteCompression(false)
			if err != nil {
				return err
			}
			s.sent(batch[:1], len(batch[0].Frame))
			s.metrics.CompressedMessages.Inc()
			batch = batch[1:]
			continue
		}
		w, err := s.conn.NextWriter(websocket.TextMessage)
		if err != nil {
			return err
		}
		size, n := 0, 0
		for n < len(batch) && (n == 0 || size+len(batch[n].Frame) < s.cfg.MaxBatchBytes) {
			if n > 0 {
				if batch[n].Prepared != nil && s.cfg.Compress {
					break
				}
				if _, err := w.Write(newline); err != nil {
					return err
				}
				size++
			}
			if _, err := w.Write(batch[n].Frame); err != nil {
				return err
			}
			size += len(batch[n].Frame)
			n++
		}
		if err := w.Close(); err != nil {
			return err
		}
		s.sent(batch[:n], size)
		batch = batch[n:]
	}
	return nil
}

// sent counts one frame holding msgs (size payload bytes, before any
// compression).
func (s *Session) sent(msgs []outbox.Message, size int) {
	s.metrics.FramesSent.Inc()
	s.metrics.MessagesSent.Add(float64(len(msgs)))
	s.metrics.BytesSent.Add(float64(size))
	s.metrics.BatchMessages.Observe(float64(len(msgs)))
	// One observation per frame, of its oldest update: the frame's worst
	// latency, without a shared histogram update per message.
	var oldest int64
	for _, m := range msgs {
		if m.Published > 0 && (oldest == 0 || m.Published < oldest) {
			oldest = m.Published
		}
	}
	if oldest > 0 {
		s.metrics.PublishToSend.Observe(float64(time.Now().UnixMilli()-oldest) / 1000)
	}
}
