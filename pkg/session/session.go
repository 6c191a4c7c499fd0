// Package session serves one client connection of the native WebSocket
// protocol: a reader that executes the client's commands against the hub,
// and a writer that drains the client's outbox, batching whatever is queued
// into one frame, and sends the heartbeat pings.
//
// Lifetime: Serve runs the reader on the caller's goroutine and owns the
// writer goroutine; it returns when both have ended, after the client has
// left all its rooms and the socket is closed. Close (from any goroutine)
// starts the close handshake with a code; a read error (peer gone, pong
// overdue) ends the session at once.
package session

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/pkg/auth"
	"github.com/roomcast/roomcast/pkg/hub"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Config holds the per-connection tunables. See config.yaml for what each
// protects and its default.
type Config struct {
	PingInterval  time.Duration // time between pings
	PongTimeout   time.Duration // how long after a ping its pong may come
	WriteTimeout  time.Duration // deadline for writing one frame
	MaxFrameBytes int64         // largest client frame; larger closes with 1009
	MaxRooms      int           // rooms one connection may be in
	CommandRate   float64       // sustained commands per second
	CommandBurst  int           // commands allowed at once
	Outbox        outbox.Limits // slow-client policy
	MaxBatchBytes int           // a batch is split into frames of about this size
	// History tells whether the gateway can serve "since"; without it a
	// resume is refused with history_unavailable.
	History bool
	// Compress: this client negotiated permessage-deflate; updates the hub
	// prepared for compression are sent compressed, the rest plain.
	Compress bool
}

// closeGrace bounds how long a closing session waits for the client's
// close frame, and how long the last flush and the close frame may take.
const closeGrace = 2 * time.Second

// Session is one client connection.
type Session struct {
	conn    *websocket.Conn
	hub     *hub.Hub
	box     *outbox.Outbox
	cfg     Config
	grant   *auth.Grant // nil: every room
	metrics *metrics.Metrics
	log     *slog.Logger

	// Owned by the reader goroutine.
	rooms    map[string]struct{}
	bucket   tokenBucket
	rejected int // commands refused in a row by the rate limit

	closeOnce   sync.Once
	closing     chan struct{} // closed by Close
	closeCode   int           // written before closing is closed
	closeReason string
	readerDone  chan struct{}
}

// New prepares a session on an upgraded connection. grant says which rooms
// the client may join and until when; nil allows every room, for ever.
func New(conn *websocket.Conn, h *hub.Hub, cfg Config, grant *auth.Grant, m *metrics.Metrics, log *slog.Logger) *Session {
	s := &Session{
		conn:       conn,
		hub:        h,
		cfg:        cfg,
		grant:      grant,
		metrics:    m,
		log:        log,
		rooms:      make(map[string]struct{}),
		bucket:     newTokenBucket(cfg.CommandRate, cfg.CommandBurst, time.Now()),
		closing:    make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	s.box = outbox.New(cfg.Outbox, s.overflowed)
	// gorilla compresses every write once compression is negotiated;
	// only the shared, prepared frames should be.
	conn.EnableWriteCompression(false)
	return s
}

// overflowed runs on the fan-out path when the client's queue overflows:
// the queue is already freed; close with 4008, and make a writer that is
// blocked on the client's full socket give up now rather than at its
// write deadline. (gorilla sets the deadline again for each fragment, so
// a writer between two fragments may still wait out write_timeout.)
func (s *Session) overflowed() {
	s.metrics.SlowDisconnects.Inc()
	s.Close(protocol.CloseTooSlow, "client too slow")
	_ = s.conn.NetConn().SetWriteDeadline(time.Now())
}

// Close starts closing the connection with a WebSocket close code. It does
// not block; the first call wins.
func (s *Session) Close(code int, reason string) {
	s.closeOnce.Do(func() {
		s.closeCode, s.closeReason = code, reason
		close(s.closing)
	})
}

// Abort drops the connection without a close frame, as a crash would.
func (s *Session) Abort() { _ = s.conn.NetConn().Close() }

// Queued reports the messages and bytes waiting in the client's outbox.
func (s *Session) Queued() (messages, bytes int) { return s.box.Len() }

// Serve runs the session until the connection ends. ctx only carries
// values for logging; use Close to end a session.
func (s *Session) Serve(ctx context.Context) {
	start := time.Now()
	s.metrics.ConnectionsAccepted.Inc()
	s.metrics.Connections.Inc()
	s.log.DebugContext(ctx, "connection opened")

	// A token that expires closes the connection with 4001, so that the
	// client fetches a new one and reconnects.
	if d, ok := s.grant.ExpiresIn(time.Now()); ok {
		expiry := time.AfterFunc(max(d, 0), func() {
			s.metrics.TokensExpired.Inc()
			s.Close(protocol.CloseTokenExpired, "token expired")
		})
		defer expiry.Stop()
	}

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop()
	}()
	err := s.readLoop()
	close(s.readerDone)

	rooms := make([]string, 0, len(s.rooms))
	for r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.hub.LeaveAll(s.box, rooms)
	s.box.Close()
	// Unblock a writer stuck on a peer that stopped reading; by now the
	// close frame, if any, has been sent.
	_ = s.conn.NetConn().Close()
	<-writerDone

	s.metrics.Connections.Dec()
	select {
	case <-s.closing:
		s.metrics.Disconnects.WithLabelValues(strconv.Itoa(s.closeCode)).Inc()
		s.log.DebugContext(ctx, "connection closed", "code", s.closeCode, "reason", s.closeReason, "duration", time.Since(start))
	default:
		s.log.DebugContext(ctx, "connection ended", "err", err, "duration", time.Since(start))
	}
}

// readLoop reads frames until the connection fails or, after Close, until
// the client answers the close frame (or closeGrace runs out).
func (s *Session) readLoop() error {
	s.conn.SetReadLimit(s.cfg.MaxFrameBytes)
	s.extendReadDeadline()
	s.conn.SetPongHandler(func(string) error {
		s.extendReadDeadline()
		return nil
	})
	for {
		typ, frame, err := s.conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				// gorilla has already sent 1009.
				s.Close(protocol.CloseMessageTooBig, "frame too large")
			}
			return err
		}
		if s.isClosing() {
			continue // drain until the client's close frame
		}
		switch {
		case typ != websocket.TextMessage:
			s.Close(protocol.CloseUnsupportedData, "binary frames are not supported")
		case !utf8.Valid(frame):
			s.Close(protocol.CloseInvalidPayload, "text frame is not valid UTF-8")
		default:
			s.command(frame)
		}
	}
}

func (s *Session) extendReadDeadline() {
	if s.isClosing() {
		return // keep the close grace deadline
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(s.cfg.PingInterval + s.cfg.PongTimeout))
}

func (s *Session) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// command executes one client frame. Every frame costs a token, parsed
// or not; a refused command is answered with its id and room when it has
// them, so a client can tell which one to retry.
func (s *Session) command(frame []byte) {
	cmd, perr := protocol.ParseCommand(frame)
	if !s.bucket.take(time.Now()) {
		s.rejected++
		if s.rejected > s.cfg.CommandBurst {
			s.Close(protocol.ClosePolicyViolation, "command flood")
			return
		}
		e := &protocol.Error{Code: protocol.CodeRateLimited, Message: "too many commands; slow down"}
		if perr == nil {
			e.Room, e.ID, e.HasID = cmd.Room, cmd.ID, cmd.HasID
		}
		s.reply(e)
		return
	}
	s.rejected = 0
	if perr != nil {
		s.reply(perr)
		return
	}
	switch cmd.Op {
	case protocol.OpJoin:
		s.join(cmd)
	case protocol.OpLeave:
		s.hub.Leave(s.box, cmd.Room, cmd.ID, cmd.HasID)
		delete(s.rooms, cmd.Room)
	}
}

func (s *Session) join(cmd protocol.Command) {
	fail := func(code, msg string) {
		s.reply(&protocol.Error{Code: code, Message: msg, Room: cmd.Room, ID: cmd.ID, HasID: cmd.HasID})
	}
	if !s.grant.Allows(cmd.Room) {
		fail(protocol.CodeForbidden, "your token does not grant this room")
		return
	}
	if cmd.HasSince && !s.cfg.History {
		fail(protocol.CodeHistoryUnavailable, "this gateway runs without history; join without since")
		return
	}
	if _, in := s.rooms[cmd.Room]; !in && len(s.rooms) >= s.cfg.MaxRooms {
		fail(protocol.CodeTooManyRooms, "a connection may join at most "+strconv.Itoa(s.cfg.MaxRooms)+" rooms")
		return
	}
	req := hub.JoinRequest{Room: cmd.Room, ID: cmd.ID, HasID: cmd.HasID, Since: cmd.Since, HasSince: cmd.HasSince}
	if err := s.hub.Join(s.box, req); err != nil {
		// Only a closed NATS connection fails a subscribe: this replica
		// cannot serve, so send the client to another one.
		s.log.Warn("join failed", "room", cmd.Room, "err", err)
		s.Close(protocol.CloseTryAgainLater, "gateway cannot reach NATS")
		return
	}
	s.rooms[cmd.Room] = struct{}{}
}

func (s *Session) reply(e *protocol.Error) {
	s.metrics.ClientErrors.WithLabelValues(e.Code).Inc()
	s.box.Push(outbox.Message{Frame: protocol.AppendError(nil, e)})
}
