package ws

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// loopState is a session's write side when a Writer's loop writes it
// (Linux, a plain socket, no permessage-deflate). Everything the session
// writes then goes through it: data frames, control frames and the close
// frame, so that no frame ever starts inside a partly written one.
//
// Lock order: lp.mu, then the loop's mu (schedule) or the writer's mu
// (arm, forget), then the outbox's lock (TakeQueued). Nothing holding
// lp.mu calls end, or anything that could take lp.mu again. Only a write
// loop holds several sessions' lp.mu at once (those whose SENDs are in
// its ring, taken one after another); no one else holds two, so that
// makes no cycle.
type loopState struct {
	loop   *evloop // nil: the session has a writer goroutine (writer.go)
	raw    syscall.RawConn
	sockFD int32 // the socket's number, for io_uring SENDs (valid until forget)

	queued    atomic.Bool // on the loop's ready list
	writable  atomic.Bool // EPOLLOUT came since the socket was armed
	refilling atomic.Bool // a refill goroutine is asking the outbox's feeds
	closeSent atomic.Bool // the close frame has gone: waiting for the answer

	mu sync.Mutex // everything below
	// out: bytes of the frame being written that the socket has not
	// taken yet (one data frame, or control frames). outBuf is the pooled
	// buffer under it; outMsgs and outSize what the frame counts for in
	// the metrics once it has gone (outMsgs nil: control frames).
	out     []byte
	outBuf  *[]byte
	outMsgs []outbox.Message
	outSize int
	ctrl    []byte // control frames waiting for out to be written
	// rest: messages taken from the outbox, not framed yet; spare is
	// the previous batch, reused.
	rest, spare []outbox.Message
	armed       bool      // EPOLLOUT asked for and not seen yet
	due         time.Time // when out, unmoved, ends the session (write_timeout)
	registered  bool      // the socket is in the writer's epoll
	fd          int32     // as registered
	gen         uint32    // the registration's generation
	closeStage  int       // closeNone … closeFrameQueued
	closeDue    time.Time // closeGrace after the loop saw the close begin
	tooSlowDue  time.Time // 4008: the close frame must have gone by then
	flushed     bool      // the close's one take of the queue is done
	graceTimer  *time.Timer
	// The io_uring path: inRing while a SEND of out is in the loop's
	// ring (the loop holds mu until its result is in); then resReady,
	// and resN and resErr are what the send did.
	inRing, resReady bool
	resN             int
	resErr           error
}

const (
	closeNone        = iota
	closeBegun       // flushing what was queued
	closeFrameQueued // the close frame is in out; nothing may follow it
)

// maxTurnFrames bounds the frames one session writes in one turn, so
// that a client with a long queue does not hold up its loop's others.
const maxTurnFrames = 16

// useLoop makes the session's writes go through w when its socket allows.
func (s *Session) useLoop(w *Writer) {
	if w == nil || s.cfg.Compress {
		return // prepared (compressed) frames are gorilla's to write
	}
	sc, ok := s.nc.(syscall.Conn)
	if !ok {
		return // TLS
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	fd := int32(-1)
	_ = raw.Control(func(f uintptr) { fd = int32(f) })
	if fd < 0 {
		return
	}
	s.lp.raw, s.lp.sockFD, s.lp.loop = raw, fd, w.assign()
}

// schedule puts the session on its loop for a turn.
func (s *Session) schedule() { s.lp.loop.schedule(s) }

// loopTurn writes what the session has, as far as the socket takes it.
// It runs on the session's loop, under lp.mu; an error ends the session.
func (s *Session) loopTurn(l *evloop) error {
	lp := &s.lp
	if s.isEnded() {
		lp.dropOut()
		return nil
	}
	now := time.Now()
	if s.isClosing() && lp.closeStage == closeNone {
		lp.closeStage = closeBegun
		lp.closeDue = now.Add(closeGrace)
		if s.closeCode == protocol.CloseTooSlow {
			// 4008: give up at once on a frame the socket would not take
			// (the close frame cannot be sent inside it), and give the
			// close frame only tooSlowGrace.
			if lp.outMsgs != nil && len(lp.out) > 0 && !lp.resReady {
				return errTooSlow
			}
			lp.tooSlowDue = now.Add(tooSlowGrace)
			clear(lp.rest)
			lp.rest, lp.flushed = lp.rest[:0], true
		}
	}
	if lp.armed {
		// Waiting for EPOLLOUT: a push alone does not make the socket
		// writable, so do not try (and re-arm) on every one.
		if !lp.writable.Swap(false) && lp.closeStage == closeNone {
			return nil
		}
		lp.armed = false
	}
	frames := 0
	for {
		if len(lp.out) > 0 {
			n, err, inRing := l.write(s)
			if inRing {
				return nil // the loop runs the turn on with the result
			}
			lp.out = lp.out[n:]
			if err != nil {
				return err
			}
			if len(lp.out) > 0 {
				// The socket is full: keep the rest, resume on EPOLLOUT.
				if n > 0 || lp.due.IsZero() {
					lp.due = now.Add(s.cfg.WriteTimeout)
				}
				if lp.closeStage != closeNone && lp.closeDue.Before(lp.due) {
					lp.due = lp.closeDue
				}
				if !lp.tooSlowDue.IsZero() && lp.tooSlowDue.Before(lp.due) {
					lp.due = lp.tooSlowDue
				}
				lp.armed = true
				return l.w.arm(s)
			}
			lp.due = time.Time{}
			if lp.outMsgs != nil {
				s.sent(lp.outMsgs, lp.outSize)
				clear(lp.outMsgs)
				lp.outMsgs = nil
			}
			lp.releaseOut()
			if lp.closeStage == closeFrameQueued {
				return s.closeFrameSent()
			}
			continue
		}
		if len(lp.ctrl) > 0 {
			lp.setOut(lp.ctrl)
			lp.ctrl = lp.ctrl[:0]
			continue
		}
		if lp.closeStage == closeFrameQueued {
			return nil // the close frame went earlier; wait for the answer
		}
		if frames >= maxTurnFrames {
			s.schedule() // more next turn, after the loop's others
			return nil
		}
		if len(lp.rest) == 0 {
			if lp.closeStage == closeBegun {
				if lp.flushed {
					// Everything that was to go has gone: the close frame.
					lp.setOut(appendControlHeader(nil, websocket.CloseMessage, websocket.FormatCloseMessage(s.closeCode, s.closeReason)))
					lp.closeStage = closeFrameQueued
					continue
				}
				lp.flushed = true
			} else if s.box.NeedsRefill() {
				s.startRefill()
			}
			var overflowed bool
			lp.rest, overflowed = s.box.TakeQueued(lp.spare)
			lp.spare = nil
			if overflowed {
				return nil // overflowed() begins the 4008 close and schedules
			}
			if len(lp.rest) == 0 {
				if lp.closeStage == closeBegun {
					continue
				}
				lp.spare, lp.rest = lp.rest, nil
				return nil
			}
		}
		// Frame what fits in one frame, as writeBatch does.
		bp := frameBufs.Get().(*[]byte)
		b, start, n, size := s.frameMessages(*bp, lp.rest)
		*bp = b
		lp.outBuf, lp.out = bp, b[start:]
		lp.outMsgs, lp.outSize = lp.rest[:n:n], size
		lp.rest = lp.rest[n:]
		if len(lp.rest) == 0 {
			lp.rest = nil // the batch's array is released with outMsgs
		}
		frames++
	}
}

// setOut makes p the bytes to write next (copied into a pooled buffer).
func (lp *loopState) setOut(p []byte) {
	bp := frameBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], p...)
	lp.outBuf, lp.out = bp, *bp
}

// releaseOut gives out's buffer back to the pool.
func (lp *loopState) releaseOut() {
	if lp.outBuf != nil && cap(*lp.outBuf) <= maxPooledFrame {
		*lp.outBuf = (*lp.outBuf)[:0]
		frameBufs.Put(lp.outBuf)
	}
	lp.outBuf, lp.out = nil, nil
}

// dropOut forgets everything unwritten of an ended session.
func (lp *loopState) dropOut() {
	lp.out, lp.outBuf, lp.outMsgs, lp.ctrl = nil, nil, nil, nil
	lp.resReady, lp.resErr = false, nil
	clear(lp.rest)
	lp.rest, lp.spare = nil, nil
}

// startRefill asks the outbox's feeds (a resume's replay) for a page on a
// goroutine of its own, since a feed may read from the stream: the loop
// must not wait for it. It runs while a replay is paged, never per live
// delivery, and ends after one Refill.
func (s *Session) startRefill() {
	if !s.lp.refilling.CompareAndSwap(false, true) {
		return
	}
	go func() {
		progress := s.box.Refill()
		s.lp.refilling.Store(false)
		if progress {
			s.schedule()
		}
	}()
}

// closeFrameSent: the close frame has gone; the client has until
// closeDue to answer. Under lp.mu.
func (s *Session) closeFrameSent() error {
	s.lp.closeSent.Store(true)
	select {
	case <-s.peerClosed:
		return errClosedDone // answered already
	default:
	}
	s.lp.graceTimer = time.AfterFunc(time.Until(s.lp.closeDue), func() { s.end(nil) })
	return nil
}

// errClosedDone ends a session whose close handshake is complete; end
// records it as the close it began (closeStatus looks at the state).
var errClosedDone = errors.New("close handshake done")

// loopControl sends a control frame of a loop-written session: at once
// when nothing is being written (a ping or pong need not wait for the
// loop), else after the frame in progress. Nothing follows a close frame.
func (s *Session) loopControl(op int, payload []byte) {
	lp := &s.lp
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if s.isEnded() || lp.closeStage == closeFrameQueued {
		return
	}
	if op == websocket.CloseMessage {
		// The answer to the client's close: the session ends right after.
		lp.closeStage = closeFrameQueued
	}
	if len(lp.out) > 0 || lp.armed {
		lp.ctrl = appendControlHeader(lp.ctrl, op, payload)
		s.schedule()
		return
	}
	var frame [2 + 125]byte
	b := appendControlHeader(frame[:0], op, payload)
	n, err := writeNow(lp.raw, b)
	if err != nil || n == len(b) {
		return // a failed socket is found by the reader or the loop
	}
	lp.setOut(b[n:])
	s.schedule()
}

// appendControlHeader appends an unmasked control frame (payload of at
// most 125 bytes).
func appendControlHeader(dst []byte, op int, payload []byte) []byte {
	dst = append(dst, 0x80|byte(op), byte(len(payload)))
	return append(dst, payload...)
}
