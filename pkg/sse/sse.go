// Package sse serves the native protocol over Server-Sent Events, for
// screens behind proxies that break WebSockets:
//
//	GET /sse?rooms=sales,visitors[&since=sales:41,visitors:7 | &since=41][&history=50 | &history=5m]
//
// It is a thin adapter on the client core (package client): the query is
// parsed into join commands, and what the client's outbox holds is
// written as events whose data is the same JSON object a /ws client gets
// ({"op":"update",...}, {"op":"joined",...}, {"op":"error",...}). Each
// update carries an id naming the last seq of every room of the stream,
// so EventSource resumes on its own: when the stream ends (a gateway
// drains, a proxy cuts it) the browser reconnects with Last-Event-ID and
// gets every update it missed, as a /ws join with since would.
//
// A stream is one-way: the client cannot join or leave later; it opens
// another stream. Each stream holds its request's goroutine (net/http's)
// for its lifetime, blocked in a select while idle; SSE is the fallback
// transport, not the one to hold 10,000 screens with.
package sse

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roomcast/roomcast/pkg/client"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Config tunes the streams. See config.yaml for what each protects.
type Config struct {
	Outbox outbox.Limits // slow-client policy
	// PingInterval: a comment line is sent this often on an idle stream,
	// so that proxies keep it open and a client that has gone is found by
	// the write failing.
	PingInterval time.Duration
	// WriteTimeout bounds every write; a client that does not take the
	// bytes in time is dropped.
	WriteTimeout time.Duration
	// Retry is the reconnection delay EventSource is told to use.
	Retry time.Duration
}

// ParseQuery reads a stream request into its join commands: rooms (one or
// more, comma-separated), and either since (a seq for a single room, or
// room:seq pairs) or history (a count or a duration, for every room).
// Last-Event-ID, which EventSource sends when it reconnects, takes the
// place of since. The error says what is wrong, for a 400.
func ParseQuery(r *http.Request) ([]protocol.Command, error) {
	q := r.URL.Query()
	names := strings.Split(q.Get("rooms"), ",")
	if q.Get("rooms") == "" {
		return nil, errors.New(`"rooms" is missing: /sse?rooms=sales,visitors`)
	}
	var cmds []protocol.Command
	seen := map[string]bool{}
	for _, name := range names {
		if err := protocol.CheckRoom(name); err != nil {
			return nil, err
		}
		if !seen[name] {
			seen[name] = true
			cmds = append(cmds, protocol.Command{Op: protocol.OpJoin, Room: name})
		}
	}
	since := q.Get("since")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		since = id
	}
	if since != "" {
		at, err := parseSince(since, cmds)
		if err != nil {
			return nil, err
		}
		for i := range cmds {
			if seq, ok := at[cmds[i].Room]; ok {
				cmds[i].Since, cmds[i].HasSince = seq, true
			}
		}
	}
	if h := q.Get("history"); h != "" {
		raw := h
		if _, err := strconv.Atoi(h); err != nil {
			raw = strconv.Quote(h) // a duration: the protocol's JSON string
		}
		n, age, e := protocol.ParseHistory([]byte(raw))
		if e != nil {
			return nil, errors.New(e.Message)
		}
		for i := range cmds {
			if !cmds[i].HasSince { // a room resumed goes on from its since
				cmds[i].HistoryCount, cmds[i].HistoryAge = n, age
			}
		}
	}
	return cmds, nil
}

// parseSince reads "41" (the only room's seq) or "sales:41,visitors:7".
func parseSince(s string, cmds []protocol.Command) (map[string]uint64, error) {
	bad := errors.New(`"since" must be a seq (one room) or room:seq pairs, such as sales:41,visitors:7`)
	at := map[string]uint64{}
	if !strings.Contains(s, ":") {
		seq, err := strconv.ParseUint(s, 10, 64)
		if err != nil || len(cmds) != 1 {
			return nil, bad
		}
		at[cmds[0].Room] = seq
		return at, nil
	}
	for _, pair := range strings.Split(s, ",") {
		room, n, ok := strings.Cut(pair, ":")
		seq, err := strconv.ParseUint(n, 10, 64)
		if !ok || err != nil || protocol.CheckRoom(room) != nil {
			return nil, bad
		}
		at[room] = seq // a room not asked for is ignored: the stream's rooms are in rooms
	}
	return at, nil
}

// Stream is one client's event stream.
type Stream struct {
	client  *client.Client
	box     *outbox.Outbox
	cfg     Config
	metrics *metrics.Metrics
	log     *slog.Logger
	logArgs []any

	cursor map[string]uint64 // room → last seq sent; owned by Serve
	ids    []string          // rooms with a seq, in join order, for the event id

	closeOnce   sync.Once
	closing     chan struct{} // closed by Close or the queue's overflow
	closeCode   int
	closeReason string
	abort       chan struct{}
	abortOnce   sync.Once
}

// New makes a stream on hub h for a client holding grant (nil: every
// room). logArgs (key, value, ...) are added to its log lines.
func New(rules *client.Rules, cfg Config, grant client.Grant, m *metrics.Metrics, log *slog.Logger, logArgs ...any) *Stream {
	s := &Stream{cfg: cfg, metrics: m, log: log, logArgs: logArgs,
		cursor: map[string]uint64{}, closing: make(chan struct{}), abort: make(chan struct{})}
	s.box = outbox.New(cfg.Outbox, func() {
		m.SlowDisconnects.Inc()
		s.Close(protocol.CloseTooSlow, "client too slow")
	})
	s.client = rules.New(s.box, func() { s.Close(protocol.CloseTokenExpired, "token expired") })
	s.client.SetGrant(grant)
	return s
}

// Close ends the stream with a close event carrying code and reason (1012
// when the gateway drains): EventSource then reconnects, with
// Last-Event-ID, to whichever replica the load balancer picks. It does not
// block; the first call wins.
func (s *Stream) Close(code int, reason string) {
	s.closeOnce.Do(func() {
		s.closeCode, s.closeReason = code, reason
		close(s.closing)
	})
}

// Abort ends the stream without a close event, as a crash would.
func (s *Stream) Abort() { s.abortOnce.Do(func() { close(s.abort) }) }

// Queued reports the messages and bytes waiting in the client's outbox.
func (s *Stream) Queued() (messages, bytes int) { return s.box.Len() }

// errGone is a client that went away (the request's context ended);
// errAborted a stream dropped by Abort.
var (
	errGone    = errors.New("client went away")
	errAborted = errors.New("aborted")
)

// Serve answers the request with the stream, joins the rooms and writes
// until the client goes, Close or Abort is called, or a write fails. It
// runs on the request's goroutine and returns when the stream has ended
// and the client has left every room.
func (s *Stream) Serve(w http.ResponseWriter, r *http.Request, joins []protocol.Command) {
	rc := http.NewResponseController(w)
	s.metrics.ConnectionsAccepted.Inc()
	s.metrics.Connections.Inc()
	start := time.Now()
	code, byClient := protocol.CloseNormal, false
	err := s.run(r.Context(), w, rc, joins)
	switch {
	case errors.Is(err, errGone):
		code, byClient = metrics.CloseAbnormal, true
	case err != nil: // aborted, or a write failed or timed out: the gateway gave up
		code = metrics.CloseAbnormal
	default:
		code = s.closeCode
	}
	s.client.Close() // out of every room, the queue freed
	s.metrics.Connections.Dec()
	s.metrics.Disconnected(code, byClient)
	s.log.Debug("sse stream ended", append(s.logArgs, "code", code, "err", err, "duration", time.Since(start))...)
}

func (s *Stream) run(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, joins []protocol.Command) error {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, 0, 512)
	buf = append(buf, "retry: "...)
	buf = strconv.AppendInt(buf, s.cfg.Retry.Milliseconds(), 10)
	buf = append(buf, "\n\n"...)
	if err := s.write(w, rc, buf); err != nil {
		return err
	}
	for _, cmd := range joins {
		if s.client.Command(cmd) == client.Unavailable {
			s.Close(protocol.CloseTryAgainLater, "gateway cannot reach NATS")
			break
		}
	}
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	var batch []outbox.Message
	for {
		select {
		case <-ctx.Done():
			return errGone
		case <-s.abort:
			return errAborted
		case <-s.closing:
			if s.closeCode != protocol.CloseTooSlow {
				batch, _ = s.box.Take(batch[:0])
				buf = s.appendBatch(buf[:0], batch)
			} else {
				buf = buf[:0]
			}
			// A named event: onmessage does not see it, a listener for
			// "close" does; then the stream ends and EventSource reconnects.
			buf = append(buf, `event: close`+"\n"+`data: {"code":`...)
			buf = strconv.AppendInt(buf, int64(s.closeCode), 10)
			buf = append(buf, `,"reason":`...)
			buf = strconv.AppendQuote(buf, s.closeReason)
			buf = append(buf, "}\n\n"...)
			_ = s.write(w, rc, buf)
			return nil
		case <-s.box.Ready():
			var overflowed bool
			batch, overflowed = s.box.Take(batch[:0])
			if overflowed || len(batch) == 0 {
				continue // an overflow has called Close
			}
			buf = s.appendBatch(buf[:0], batch)
			if err := s.write(w, rc, buf); err != nil {
				return err
			}
			s.metrics.FramesSent.Inc()
			s.metrics.MessagesSent.Add(float64(len(batch)))
			s.metrics.BytesSent.Add(float64(len(buf)))
			s.metrics.ObserveSent(time.Now(), batch)
			clear(batch)
		case <-ping.C:
			if err := s.write(w, rc, []byte(":\n\n")); err != nil {
				return err
			}
		}
	}
}

// appendBatch appends the batch as events: "data:" the native JSON, and
// for an update with a seq the id that resumes every room of the stream.
func (s *Stream) appendBatch(buf []byte, batch []outbox.Message) []byte {
	for i := range batch {
		m := &batch[i]
		if p := m.Pub; p != nil && p.Seq != 0 {
			if _, known := s.cursor[p.Room]; !known {
				s.ids = append(s.ids, p.Room)
			}
			s.cursor[p.Room] = p.Seq
			buf = append(buf, "id: "...)
			for j, room := range s.ids {
				if j > 0 {
					buf = append(buf, ',')
				}
				buf = append(buf, room...)
				buf = append(buf, ':')
				buf = strconv.AppendUint(buf, s.cursor[room], 10)
			}
			buf = append(buf, '\n')
		}
		// The native JSON is compact: one line, never a newline inside.
		buf = append(buf, "data: "...)
		buf = m.AppendJSON(buf)
		buf = append(buf, "\n\n"...)
	}
	return buf
}

// write sends b and flushes it, within the write timeout.
func (s *Stream) write(w http.ResponseWriter, rc *http.ResponseController, b []byte) error {
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := w.Write(b); err != nil {
		return err
	}
	return rc.Flush()
}
