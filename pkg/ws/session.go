// Package ws is the native WebSocket transport (/ws): one Session per
// connection parses the client's frames into commands for its client core
// (package client), writes what the client's outbox holds as batched
// frames, and keeps the heartbeat.
//
// An idle connection holds no goroutine. Reading: with a Poller (Linux,
// plain sockets) the socket is watched by epoll and a short-lived
// goroutine reads and runs whatever arrived; otherwise (TLS, other
// systems) one reader goroutine per connection blocks in Read. Writing:
// with a Writer (Linux, plain sockets, no permessage-deflate) a push hands
// the session to one of the writer's loops, which writes it without
// blocking (loop_linux.go, loopsession.go); otherwise a writer goroutine
// is started when the outbox receives a message and ends when the outbox
// is empty. Heartbeat and token expiry are timers.
//
// Lock order: hbMu, then the loop writer's lp.mu (see loopState).
//
// Lifetime: Start returns at once; the session ends (teardown: leave every
// room, free the queue, close the socket, call onDone) when the client
// closes, a read or write fails, the pong is overdue, or a close started by
// Close completes or times out. Close starts the close handshake with a
// code; Abort drops the connection as a crash would.
package ws

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/pkg/auth"
	"github.com/roomcast/roomcast/pkg/client"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
	"github.com/roomcast/roomcast/pkg/wsread"
)

// Config holds the per-connection tunables. See config.yaml for what each
// protects and its default.
type Config struct {
	PingInterval  time.Duration // time between pings
	PongTimeout   time.Duration // how long after a ping its pong may come
	WriteTimeout  time.Duration // deadline for writing one frame
	MaxFrameBytes int64         // largest client message; larger closes with 1009
	Outbox        outbox.Limits // slow-client policy
	MaxBatchBytes int           // a batch is split into frames of about this size
	CoalesceDelay time.Duration // a woken writer waits this long before taking the queue
	// Compress: this client negotiated permessage-deflate; updates of at
	// least CompressMinBytes (about their JSON length) are sent compressed,
	// each compressed once per gateway; the rest plain.
	Compress         bool
	CompressMinBytes int
	// Poller watches idle sockets; nil gives each connection a reader
	// goroutine.
	Poller *Poller
	// Writer's loops write the session when its socket is a plain one and
	// it did not negotiate compression; else (and when nil) a writer
	// goroutine runs while there is something to write.
	Writer *Writer
}

// closeGrace bounds how long a closing session waits for the client's
// close frame, and how long the last flush and the close frame may take.
const closeGrace = 2 * time.Second

var (
	errPongOverdue = errors.New("pong overdue")
	errAborted     = errors.New("aborted")
	errPeerClosed  = errors.New("client closed the connection")
)

// readBufs are the buffers a read borrows; an idle connection holds none.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// Session is one client connection.
type Session struct {
	conn    *websocket.Conn // writes go through gorilla
	nc      net.Conn        // the socket, read directly
	box     *outbox.Outbox
	client  *client.Client // grant, rooms, budgets, join and leave
	cfg     Config
	grant   *auth.Grant // nil: every room
	metrics *metrics.Metrics
	log     *slog.Logger
	logArgs []any // who the client is, added to each log line (cheaper than a logger per connection)
	onDone  func()
	start   time.Time

	// With a poller: the socket's registration (filled in by Poller.Add).
	// polled is false when the session fell back to a reader goroutine.
	reg    wsread.Registration
	polled bool

	// Owned by the one reader at a time (the poller's reading state,
	// or the reader goroutine).
	frames   wsread.Reader
	peerCode int // the code of the client's close frame, when it closed

	lastRead atomic.Int64 // unix nanoseconds of the client's last bytes
	writing  atomic.Bool  // a writer goroutine is running

	// The loop writer's state (lp.loop nil: the writer goroutine's).
	lp loopState

	// Owned by the writer goroutine of the moment.
	wdl    time.Time     // the socket's write deadline as last set
	wdlFor time.Duration // the timeout it was set for
	// writeDue is wdl (unix nanoseconds) while writeBatch runs, else 0:
	// control frames written meanwhile keep within it (controlDeadline).
	writeDue atomic.Int64

	hbMu         sync.Mutex // the heartbeat's state
	pingSent     int64      // unix nanoseconds
	awaitingPong bool
	heartbeat    *time.Timer

	state       atomic.Uint32 // stateClosing | stateEnded
	closeOnce   sync.Once
	closeCode   int // written before stateClosing is set
	closeReason string
	peerOnce    sync.Once
	peerClosed  chan struct{} // made by Close: the client answered our close frame, or the session ended
	endOnce     sync.Once
}

const (
	stateClosing = 1 << iota
	stateEnded
)

// New prepares a session on an upgraded connection. grant says which rooms
// the client may join and until when; nil allows every room, for ever.
// logArgs (key, value, ...) are added to the session's log lines.
func New(conn *websocket.Conn, rules *client.Rules, cfg Config, grant *auth.Grant, m *metrics.Metrics, log *slog.Logger, logArgs ...any) *Session {
	s := &Session{
		conn:    conn,
		nc:      conn.NetConn(),
		cfg:     cfg,
		grant:   grant,
		metrics: m,
		log:     log,
		logArgs: logArgs,
		frames:  wsread.Reader{MaxMessage: int(cfg.MaxFrameBytes), Deflate: cfg.Compress},
	}
	s.useLoop(cfg.Writer)
	s.box = outbox.NewNotify(cfg.Outbox, s.overflowed, s.kick)
	s.client = rules.New(s.box, func() { s.Close(protocol.CloseTokenExpired, "token expired") })
	// gorilla compresses every write once compression is negotiated;
	// only the shared, prepared frames should be.
	conn.EnableWriteCompression(false)
	return s
}

// Start runs the session and returns at once; onDone is called when it has
// ended. Close and Abort must not be called before Start.
func (s *Session) Start(onDone func()) {
	s.onDone = onDone
	s.start = time.Now()
	s.lastRead.Store(s.start.UnixNano())
	s.metrics.ConnectionsAccepted.Inc()
	s.metrics.Connections.Inc()
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("connection opened", s.logArgs...)
	}

	s.heartbeat = time.AfterFunc(s.cfg.PingInterval, s.beat)
	// A token that expires closes the connection with 4001, so that the
	// client fetches a new one and reconnects.
	s.client.SetGrant(s.grant)
	if s.cfg.Poller != nil {
		// Set before add: an event may end the session before add returns.
		s.polled = true
		if s.cfg.Poller.Add((*pollConn)(s), &s.reg, s.nc) == nil {
			return
		}
		s.polled = false
	}
	go s.readLoop()
}

// overflowed runs on the fan-out path when the client's queue overflows:
// the queue is already freed; close with 4008, and make a writer that is
// blocked on the client's full socket give up now rather than at its
// write deadline.
func (s *Session) overflowed() {
	s.metrics.SlowDisconnects.Inc()
	// Cut before Close starts the writer on the close frame, so that the
	// close frame comes after the cut and gets tooSlowGrace, not nothing.
	// (The loop writer has no deadlines: its turn gives up by itself.)
	if s.lp.loop == nil {
		s.cutWrites()
	}
	s.Close(protocol.CloseTooSlow, "client too slow")
}

// Close starts closing the connection with a WebSocket close code: queued
// messages are flushed (unless the client is too slow), the close frame is
// sent, and the client has closeGrace to answer. It does not block; the
// first call wins.
func (s *Session) Close(code int, reason string) {
	s.closeOnce.Do(func() {
		s.closeCode, s.closeReason = code, reason
		s.peerClosed = make(chan struct{})
		s.state.Or(stateClosing)
	})
	s.kick()
}

// answered tells finish to stop waiting for the client's close frame.
func (s *Session) answered() {
	if s.isClosing() {
		s.peerOnce.Do(func() { close(s.peerClosed) })
		// The loop writer has nobody waiting on peerClosed once its close
		// frame has gone: end here. (end itself calls answered after
		// setting stateEnded, so this never re-enters end.)
		if s.lp.closeSent.Load() && !s.isEnded() {
			s.end(errClosedDone)
		}
	}
}

// Abort drops the connection without a close frame, as a crash would.
func (s *Session) Abort() { s.end(errAborted) }

// Queued reports the messages and bytes waiting in the client's outbox.
func (s *Session) Queued() (messages, bytes int) { return s.box.Len() }

func (s *Session) isClosing() bool { return s.state.Load()&stateClosing != 0 }

func (s *Session) isEnded() bool { return s.state.Load()&stateEnded != 0 }

// end tears the session down, once: no more joins, out of every room, the
// queue freed, the socket closed (which stops any reader or writer still
// running), then onDone.
func (s *Session) end(err error) {
	s.endOnce.Do(func() {
		s.state.Or(stateEnded)
		s.answered()
		if s.heartbeat != nil {
			s.heartbeat.Stop()
		}
		if s.polled {
			s.reg.Remove()
		}
		if s.lp.loop != nil {
			s.lp.loop.w.forget(s) // before the socket closes: its number may be reused at once
		}
		s.client.Close() // out of every room, the queue freed
		_ = s.nc.Close()

		s.metrics.Connections.Dec()
		s.metrics.Disconnected(s.closeStatus(err))
		if s.isClosing() {
			s.log.Debug("connection closed", append(s.logArgs, "code", s.closeCode, "reason", s.closeReason, "duration", time.Since(s.start))...)
		} else {
			s.log.Debug("connection ended", append(s.logArgs, "err", err, "duration", time.Since(s.start))...)
		}
		if s.onDone != nil {
			s.onDone()
		}
	})
}

// closeStatus says how the session ended, for roomcast_disconnects_total:
// the close code (1006 without a close frame) and whether the client
// closed. err is what end was called with.
func (s *Session) closeStatus(err error) (code int, byClient bool) {
	var ne net.Error
	switch {
	case s.isClosing():
		return s.closeCode, false
	case errors.Is(err, errPeerClosed):
		return s.peerCode, true // set by the reader, which called end
	case errors.Is(err, errPongOverdue), errors.Is(err, errAborted):
		return metrics.CloseAbnormal, false
	case errors.As(err, &ne) && ne.Timeout():
		return metrics.CloseAbnormal, false // the write deadline: the gateway gave up
	}
	return metrics.CloseAbnormal, true // the socket failed or was closed under us
}

// readable runs on its own goroutine when the poller saw the socket
// readable (and marked the registration as being read): it reads
// everything there is, runs it, and takes the next event (Rearm).
func (s *Session) readable() {
	if !s.drain() {
		return // ended: no Rearm, so no reader comes again
	}
	if err := s.reg.Rearm(); err != nil {
		s.end(err)
	}
}

// drain reads and handles what the socket holds; false when the session
// has ended.
func (s *Session) drain() bool {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	for {
		n, err := s.reg.Read(*bp)
		if n > 0 {
			s.received((*bp)[:n])
		}
		if err != nil {
			s.readFailed(err)
			return false
		}
		if s.isEnded() {
			return false
		}
		if n == 0 {
			return true
		}
	}
}

// readLoop is the reader goroutine of a connection without a poller.
func (s *Session) readLoop() {
	buf := make([]byte, 1024)
	for {
		n, err := s.nc.Read(buf)
		if n > 0 {
			s.received(buf[:n])
		}
		if err != nil {
			s.readFailed(err)
			return
		}
	}
}

// readFailed ends the session after a read error; during our close
// handshake it counts as the client's answer.
func (s *Session) readFailed(err error) {
	if s.isClosing() {
		s.answered()
		return // finish ends the session
	}
	s.end(err)
}

// received parses bytes from the client and acts on them.
func (s *Session) received(p []byte) {
	if s.isEnded() {
		return
	}
	s.lastRead.Store(time.Now().UnixNano())
	err := s.frames.Feed(p, s.frame)
	var fe *wsread.FrameError
	switch {
	case err == nil:
	case errors.As(err, &fe):
		// The stream cannot be parsed further: send the close frame and
		// end without waiting for an answer we could not read.
		s.frames.Break()
		s.Close(fe.Code, fe.Reason)
		s.answered()
	case errors.Is(err, errPeerClosed):
		s.end(err)
	}
}

// frame handles one complete message or control frame.
func (s *Session) frame(op byte, payload []byte) error {
	switch op {
	case wsread.OpText:
		if !s.isClosing() {
			s.command(payload)
		}
	case wsread.OpBinary:
		s.Close(protocol.CloseUnsupportedData, "binary frames are not supported")
	case wsread.OpPing:
		// Each ping costs a pong write: pings share the command budget, so
		// a ping flood ends like a command flood.
		switch s.client.Spend(time.Now()) {
		case client.Flooded:
			s.Close(protocol.ClosePolicyViolation, "ping flood")
			return nil
		case client.Limited:
			return nil
		}
		_ = s.writeControl(websocket.PongMessage, payload, s.cfg.WriteTimeout)
	case wsread.OpPong:
		// lastRead is updated: the heartbeat sees the client is alive.
	case wsread.OpClose:
		if s.isClosing() {
			s.answered()
			return errPeerClosed
		}
		// The client closes: answer with its code, as RFC 6455 asks.
		code := protocol.CloseNormal
		if len(payload) >= 2 {
			code = int(payload[0])<<8 | int(payload[1])
		}
		if len(payload) == 1 || !wsread.ValidCloseCode(code) {
			code = protocol.CloseProtocolError
		}
		_ = s.writeControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Second)
		s.peerCode = code
		return errPeerClosed
	}
	return nil
}

// writeControl sends a control frame beside the data: through the loop
// writer's path when it writes the session (never inside a partly written
// frame), else with gorilla, within timeout (see controlDeadline).
func (s *Session) writeControl(op int, payload []byte, timeout time.Duration) error {
	if s.lp.loop != nil {
		s.loopControl(op, payload)
		return nil
	}
	return s.conn.WriteControl(op, payload, s.controlDeadline(timeout))
}

// beat is the heartbeat: ping, then pong_timeout later check that the
// client has sent something since the ping.
func (s *Session) beat() {
	if s.isEnded() {
		return
	}
	s.hbMu.Lock()
	defer s.hbMu.Unlock()
	now := time.Now()
	if s.awaitingPong {
		if s.lastRead.Load() < s.pingSent {
			s.end(errPongOverdue)
			return
		}
		s.awaitingPong = false
		s.heartbeat.Reset(max(s.cfg.PingInterval-s.cfg.PongTimeout, time.Millisecond))
		return
	}
	if err := s.writeControl(websocket.PingMessage, nil, s.cfg.WriteTimeout); err != nil {
		s.end(err)
		return
	}
	s.pingSent, s.awaitingPong = now.UnixNano(), true
	s.heartbeat.Reset(s.cfg.PongTimeout)
}

// command executes one client message. Every message costs a token,
// parsed or not; a refused command is answered with its id and room when
// it has them, so a client can tell which one to retry.
func (s *Session) command(frame []byte) {
	cmd, perr := protocol.ParseCommand(frame)
	switch s.client.Spend(time.Now()) {
	case client.Flooded:
		s.Close(protocol.ClosePolicyViolation, "command flood")
		return
	case client.Limited:
		if perr == nil {
			s.client.Refuse(client.RateLimited(cmd.Room, cmd.ID, cmd.HasID))
		} else {
			s.client.Refuse(client.RateLimited("", 0, false))
		}
		return
	}
	if perr != nil {
		s.client.Refuse(perr)
		return
	}
	if s.client.Command(cmd) == client.Unavailable {
		s.log.Warn("join failed: no NATS", append(s.logArgs, "room", cmd.Room)...)
		s.Close(protocol.CloseTryAgainLater, "gateway cannot reach NATS")
	}
}
