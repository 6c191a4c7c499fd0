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

// writeLoop is the only goroutine that writes data frames. It ends when the
// reader has ended, or after sending the close frame Close asked for.
func (s *Session) writeLoop() {
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	var batch []outbox.Message
	for {
		select {
		case <-s.box.Ready():
			var overflowed bool
			batch, overflowed = s.box.Take(batch)
			if overflowed {
				continue // overflowed() has closed the session
			}
			if err := s.writeBatch(batch, s.cfg.WriteTimeout); err != nil {
				s.stopReader()
				return
			}
			clear(batch)
		case <-ping.C:
			if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
				s.stopReader()
				return
			}
		case <-s.closing:
			s.finish(batch)
			return
		case <-s.readerDone:
			return
		}
	}
}

// finish flushes what is queued, sends the close frame and gives the client
// closeGrace to answer it; then the connection is closed under the reader.
func (s *Session) finish(batch []outbox.Message) {
	deadline := time.Now().Add(closeGrace)
	if s.closeCode != protocol.CloseTooSlow {
		batch, overflowed := s.box.Take(batch)
		if !overflowed && s.writeBatch(batch, closeGrace) != nil {
			s.stopReader()
			return
		}
	}
	msg := websocket.FormatCloseMessage(s.closeCode, s.closeReason)
	if err := s.conn.WriteControl(websocket.CloseMessage, msg, deadline); err != nil {
		s.stopReader()
		return
	}
	_ = s.conn.NetConn().SetReadDeadline(deadline)
	// The pong handler may race the deadline above; make sure.
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-s.readerDone:
	case <-t.C:
		_ = s.conn.NetConn().Close()
	}
}

// stopReader makes a blocked read return at once; used when the connection
// is broken for writing.
func (s *Session) stopReader() {
	_ = s.conn.NetConn().SetReadDeadline(time.Now())
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
