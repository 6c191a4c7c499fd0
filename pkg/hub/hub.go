// Package hub keeps the gateway's rooms: which local clients are in each
// room, the one NATS subscription each room with local clients holds, and
// the fan-out of every update from that subscription to the clients.
//
// Interest follows clients: a room's subscription is taken on its first
// local join and dropped when its last local client has gone (after an
// optional linger, so that a flapping room does not churn subscriptions).
// Each update is validated and encoded once; the same bytes are queued to
// every client's outbox, which never blocks (see package outbox for what
// happens to a client that falls behind).
//
// With history, updates carry the stream's seq and prev. The hub keeps
// each room gap-free: a live update whose prev is newer than the last one
// the room has seen means updates were missed (a NATS reconnect, a
// dropped message), and they are fetched from the stream and delivered
// first. A join gets the room's latest update (from the room's cache, or
// from the stream for a room new on this gateway); a join with since gets
// every stored update after since, or the latest flagged missed when those
// are no longer stored.
//
// Lock order: Hub.mu, then room.deliverMu, then room.mu, then an outbox's
// own lock; Hub.mu is never held while waiting for deliverMu. deliverMu
// serialises everything that moves a room forward (live updates, repairs,
// joins that fetch from the stream), so a client's view of a room is
// always in sequence order; it may be held across a request to JetStream.
// nats.go's Subscribe and Unsubscribe only queue a protocol line, so Hub.mu
// is held across them.
package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Source subscribes to a room's updates; *broker.Rooms is the real one.
type Source interface {
	Subscribe(room string, deliver func(broker.Delivery)) (broker.Subscription, error)
}

// History reads stored room updates; *broker.History is the real one.
type History interface {
	Latest(ctx context.Context, room string) (m broker.Msg, found bool, err error)
	After(ctx context.Context, room string, since uint64, limit int) (msgs []broker.Msg, contiguous bool, err error)
}

// Member is one client's queue. Its identity is the client's identity.
type Member = *outbox.Outbox

// Options tune a hub.
type Options struct {
	// MaxUpdateBytes is the largest producer payload forwarded; larger
	// ones are dropped and counted.
	MaxUpdateBytes int
	// History, if not nil, turns history on: seq, snapshot, resume, repair.
	History History
	// HistoryDepth bounds a replay: the updates the stream keeps per room.
	HistoryDepth int
	// FetchTimeout bounds one read of the stream.
	FetchTimeout time.Duration
	// Linger keeps an emptied room's subscription this long, in case the
	// room is joined again.
	Linger time.Duration
	// CompressMinBytes, if positive, prepares update frames of at least
	// this size for permessage-deflate: compressed once, on first use, and
	// shared by every client that negotiated compression.
	CompressMinBytes int
}

// Hub is safe for concurrent use.
type Hub struct {
	src     Source
	opts    Options
	log     *slog.Logger
	metrics *metrics.Metrics

	mu     sync.Mutex
	rooms  map[string]*room
	closed bool

	dropLog rateLimitedLog
}

type room struct {
	name string

	// Owned by Hub.mu.
	sub    broker.Subscription
	refs   int         // members plus joins in progress
	linger *time.Timer // pending unsubscribe of an emptied room

	deliverMu sync.Mutex
	lastSeen  uint64       // seq of the newest update processed, valid or not
	loaded    bool         // the stream was asked for the latest update (found or not)
	scratch   bytes.Buffer // payload compaction

	mu       sync.Mutex
	members  []Member       // dense for a fast fan-out loop
	index    map[Member]int // position in members
	last     []byte         // latest update frame: the snapshot for a joiner
	lastMeta *outbox.UpdateMeta
	lastData []byte // its compact payload, to re-encode it flagged
	lastSeq  uint64
	lastPrev uint64
}

// New returns an empty hub that subscribes through src. It registers the
// rooms gauge on reg.
func New(src Source, opts Options, m *metrics.Metrics, reg prometheus.Registerer, log *slog.Logger) *Hub {
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 5 * time.Second
	}
	if opts.HistoryDepth <= 0 {
		opts.HistoryDepth = 100
	}
	h := &Hub{src: src, opts: opts, log: log, metrics: m, rooms: make(map[string]*room)}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roomcast_rooms",
		Help: "Rooms with a NATS subscription on this gateway (rooms with local clients, and emptied rooms still lingering).",
	}, func() float64 { return float64(h.Rooms()) }))
	return h
}

// ErrSubscribe wraps a failure to subscribe a room in NATS.
var ErrSubscribe = errors.New("hub: subscribe failed")

// JoinRequest is a join as the client asked for it.
type JoinRequest struct {
	Room     string
	ID       int64
	HasID    bool
	Since    uint64 // resume after this seq; 0 or !HasSince: a plain join
	HasSince bool
}

// Join adds m to the room, taking the room's subscription if m is its
// first local client. It queues the joined reply and then, in order: the
// room's latest update (a plain join), or every stored update after since
// (a resume), or the latest update flagged missed (a resume history cannot
// serve); live updates follow. Joining a room m is already in only repeats
// the reply. On error m is not in the room and no reply was queued.
func (h *Hub) Join(m Member, req JoinRequest) error {
	if !protocol.ValidRoom(req.Room) {
		return fmt.Errorf("hub: invalid room %q", req.Room)
	}
	r, err := h.acquire(req.Room)
	if err != nil {
		return err
	}
	joined := false
	defer func() {
		if !joined {
			h.release(r)
		}
	}()

	r.deliverMu.Lock()
	defer r.deliverMu.Unlock()
	reply := outbox.Message{Frame: protocol.AppendJoined(nil, req.Room, req.ID, req.HasID), Room: req.Room}

	r.mu.Lock()
	_, already := r.index[m]
	if already {
		m.Push(reply)
		r.mu.Unlock()
		return nil // the reference taken above is released by the defer
	}
	r.mu.Unlock()

	var replay []outbox.Message
	if h.opts.History != nil {
		replay = h.historyFor(r, req)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.index[m] = len(r.members)
	r.members = append(r.members, m)
	joined = true
	m.Push(reply)
	switch {
	case replay != nil:
		for _, msg := range replay {
			m.Push(msg)
		}
	case r.last != nil:
		m.Push(outbox.Message{Frame: r.last, Room: r.name, Update: true, Replay: true, Meta: r.lastMeta})
	}
	return nil
}

// historyFor prepares what a joining client gets from history, with
// deliverMu held: nil means "the room's cached latest update, if any".
// For a cold room it first loads the latest stored update into the cache.
func (h *Hub) historyFor(r *room, req JoinRequest) []outbox.Message {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.FetchTimeout)
	defer cancel()
	// A warm room has seen every update up to lastSeen, so a replay can
	// stop there and live delivery takes over without a gap.
	h.loadLatestLocked(ctx, r)
	if req.HasSince && req.Since > 0 {
		msgs, contiguous, err := h.opts.History.After(ctx, r.name, req.Since, h.opts.HistoryDepth)
		switch {
		case err != nil:
			h.log.Warn("resume from history failed; sending the latest update", "room", r.name, "since", req.Since, "err", err)
		case contiguous:
			out := make([]outbox.Message, 0, len(msgs))
			for _, msg := range msgs {
				if msg.Seq > r.lastSeen {
					break // not processed live yet: it will come that way
				}
				if f, ok := h.encode(r, msg.Seq, msg.Prev, false, msg.Data); ok {
					out = append(out, outbox.Message{Frame: f, Room: r.name, Update: true, Replay: true, Meta: replayMeta(r)})
				}
			}
			return out
		}
		// Send the latest, flagged: unless the stream could not be read and
		// the client already has what this gateway has.
		if r.lastSeq == 0 || (err != nil && r.lastSeq <= req.Since) {
			return []outbox.Message{}
		}
		f, _ := h.encode(r, r.lastSeq, r.lastPrev, true, r.lastData)
		return []outbox.Message{{Frame: f, Room: r.name, Update: true, Replay: true, Meta: replayMeta(r)}}
	}
	return nil
}

// loadLatestLocked fills a cold room's cache from the stream. deliverMu
// must be held.
//
// A room with nothing stored is asked once, not on every join: the room's
// subscription was taken before the question, so anything published since
// arrives live.
func (h *Hub) loadLatestLocked(ctx context.Context, r *room) {
	if r.lastSeen != 0 || r.loaded {
		return
	}
	msg, found, err := h.opts.History.Latest(ctx, r.name)
	if err != nil {
		h.log.Warn("loading the latest update failed", "room", r.name, "err", err)
		return
	}
	r.loaded = true
	if found {
		h.processLocked(r, msg.Seq, msg.Prev, msg.Data, false)
	}
}

// acquire returns the room, creating and subscribing it if needed, with a
// reference held for the caller.
func (h *Hub) acquire(name string) (*room, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("%w: hub closed", ErrSubscribe)
	}
	r := h.rooms[name]
	if r == nil {
		r = &room{name: name, index: make(map[Member]int)}
		sub, err := h.src.Subscribe(name, func(d broker.Delivery) { h.deliver(r, d) })
		if err != nil {
			return nil, fmt.Errorf("%w: room %s: %v", ErrSubscribe, name, err)
		}
		r.sub = sub
		h.rooms[name] = r
		h.log.Debug("room subscribed", "room", name)
	}
	if r.linger != nil {
		r.linger.Stop()
		r.linger = nil
	}
	r.refs++
	return r, nil
}

// release drops a reference; the last one unsubscribes the room, now or
// after the linger.
func (h *Hub) release(r *room) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.releaseLocked(r)
}

func (h *Hub) releaseLocked(r *room) {
	r.refs--
	if r.refs > 0 || h.rooms[r.name] != r {
		return
	}
	if h.opts.Linger <= 0 || h.closed {
		h.dropLocked(r)
		return
	}
	r.linger = time.AfterFunc(h.opts.Linger, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if r.refs == 0 && h.rooms[r.name] == r {
			h.dropLocked(r)
		}
	})
}

// Leave removes m from the room and queues the left reply; no update of the
// room is queued for m after it. Leaving a room m is not in only queues the
// reply.
func (h *Hub) Leave(m Member, name string, id int64, hasID bool) {
	left := outbox.Message{Frame: protocol.AppendLeft(nil, name, id, hasID), Room: name}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[name]
	if r == nil {
		m.Push(left)
		return
	}
	r.mu.Lock()
	was := r.removeLocked(m)
	m.Push(left)
	r.mu.Unlock()
	if was {
		h.releaseLocked(r)
	}
}

// LeaveAll removes a disconnecting m from rooms, without replies.
func (h *Hub) LeaveAll(m Member, rooms []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, name := range rooms {
		r := h.rooms[name]
		if r == nil {
			continue
		}
		r.mu.Lock()
		was := r.removeLocked(m)
		r.mu.Unlock()
		if was {
			h.releaseLocked(r)
		}
	}
}

func (r *room) removeLocked(m Member) bool {
	i, ok := r.index[m]
	if !ok {
		return false
	}
	last := len(r.members) - 1
	if i != last {
		moved := r.members[last]
		r.members[i] = moved
		r.index[moved] = i
	}
	r.members[last] = nil
	r.members = r.members[:last]
	delete(r.index, m)
	return true
}

// dropLocked unsubscribes a room. h.mu must be held.
func (h *Hub) dropLocked(r *room) {
	delete(h.rooms, r.name)
	if r.linger != nil {
		r.linger.Stop()
		r.linger = nil
	}
	if err := r.sub.Unsubscribe(); err != nil {
		// The connection is closed or draining: the server drops the
		// interest with the connection, so there is nothing to leak.
		h.log.Debug("room unsubscribe", "room", r.name, "err", err)
	}
	h.log.Debug("room unsubscribed", "room", r.name)
}

// Close unsubscribes every room, lingering or not, and refuses new joins.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, r := range h.rooms {
		h.dropLocked(r)
	}
}

// resetGap is how far below the last seq a room's first update (prev 0)
// must come to be taken for a reset stream rather than a late duplicate.
const resetGap = 1000

// deliver runs on the room subscription's delivery goroutine.
func (h *Hub) deliver(r *room, d broker.Delivery) {
	r.deliverMu.Lock()
	defer r.deliverMu.Unlock()
	if d.Seq == 0 { // no history: no order to keep beyond NATS's own
		h.processLocked(r, 0, 0, d.Payload, true)
		return
	}
	if d.Seq <= r.lastSeen {
		if d.Prev != 0 || r.lastSeen-d.Seq < resetGap {
			return // already delivered, by a repair or a join's fetch
		}
		// A room's first update far below what the room has seen: the
		// stream was deleted and created again. Start over, or the room
		// would stay silent until the new numbers pass the old ones.
		h.log.Warn("room sequence went back: the history stream was reset", "room", r.name, "seq", d.Seq, "last_seen", r.lastSeen)
		r.lastSeen = 0
	}
	if r.lastSeen != 0 && d.Prev > r.lastSeen {
		h.repairLocked(r, d.Prev)
	}
	h.processLocked(r, d.Seq, d.Prev, d.Payload, true)
}

// repairLocked delivers the stored updates of the room after lastSeen up to
// and including upTo, which the live subscription missed. deliverMu must be
// held.
func (h *Hub) repairLocked(r *room, upTo uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.FetchTimeout)
	defer cancel()
	// Right after a NATS failover the stream's API may not answer yet
	// (leader elections): retry within FetchTimeout before giving up. Live
	// updates wait in the subscription meanwhile, so order is kept.
	var (
		msgs       []broker.Msg
		contiguous bool
		err        error
	)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		msgs, contiguous, err = h.opts.History.After(ctx, r.name, r.lastSeen, h.opts.HistoryDepth)
		if err == nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	if err != nil || !contiguous {
		h.log.Warn("could not fetch missed updates; clients will see a gap", "room", r.name, "after", r.lastSeen, "err", err)
		return
	}
	n := 0
	for _, msg := range msgs {
		if msg.Seq > upTo {
			break
		}
		h.processLocked(r, msg.Seq, msg.Prev, msg.Data, true)
		n++
	}
	h.metrics.Repaired.Add(float64(n))
	h.log.Info("delivered missed updates from history", "room", r.name, "count", n)
}

// Refresh brings every room up to date with the stream: after a NATS
// reconnect, rooms whose updates were missed while disconnected get them,
// also rooms quiet since then. It returns when all rooms were checked or
// ctx ends.
func (h *Hub) Refresh(ctx context.Context) {
	if h.opts.History == nil {
		return
	}
	h.mu.Lock()
	rooms := make([]*room, 0, len(h.rooms))
	for _, r := range h.rooms {
		rooms = append(rooms, r)
	}
	h.mu.Unlock()
	for _, r := range rooms {
		if ctx.Err() != nil {
			return
		}
		r.deliverMu.Lock()
		fctx, cancel := context.WithTimeout(ctx, h.opts.FetchTimeout)
		msg, found, err := h.opts.History.Latest(fctx, r.name)
		cancel()
		switch {
		case err != nil:
			h.log.Warn("refresh after reconnect failed", "room", r.name, "err", err)
		case !found || msg.Seq <= r.lastSeen:
		case r.lastSeen == 0:
			h.processLocked(r, msg.Seq, msg.Prev, msg.Data, true)
		default:
			h.repairLocked(r, msg.Seq)
		}
		r.deliverMu.Unlock()
	}
}

// processLocked validates and encodes one update once, makes it the room's
// latest and, if fanOut, queues the same bytes to every member. deliverMu
// must be held.
func (h *Hub) processLocked(r *room, seq, prev uint64, payload []byte, fanOut bool) {
	if seq != 0 {
		r.lastSeen = seq
	}
	if fanOut {
		h.metrics.UpdatesReceived.Inc()
	}
	frame, ok := h.encode(r, seq, prev, false, payload)
	if !ok {
		return
	}
	data := frame[len(frame)-1-r.scratch.Len() : len(frame)-1] // the compact payload inside the frame
	meta := &outbox.UpdateMeta{Published: publishedAt(data), Data: data}
	if h.opts.CompressMinBytes > 0 && len(frame) >= h.opts.CompressMinBytes {
		// Once per update: gorilla frames it now and compresses it on the
		// first write to a client that negotiated compression.
		meta.Prepared, _ = websocket.NewPreparedMessage(websocket.TextMessage, frame)
	}
	msg := outbox.Message{Frame: frame, Room: r.name, Update: true, Meta: meta}

	conflated, n := 0, 0
	r.mu.Lock()
	r.last, r.lastData, r.lastSeq, r.lastPrev, r.lastMeta = frame, data, seq, prev, meta
	if fanOut {
		for _, m := range r.members {
			if m.Push(msg) == outbox.Conflated {
				conflated++
			}
		}
		n = len(r.members)
	}
	r.mu.Unlock()

	h.metrics.Deliveries.Add(float64(n))
	if conflated > 0 {
		h.metrics.Conflated.Add(float64(conflated))
	}
}

// encode validates a payload and returns the update frame; invalid
// payloads are counted, logged (rate-limited) and refused. deliverMu must
// be held (it uses the room's scratch buffer).
func (h *Hub) encode(r *room, seq, prev uint64, missed bool, payload []byte) ([]byte, bool) {
	r.scratch.Reset()
	err := errTooLarge
	if len(payload) <= h.opts.MaxUpdateBytes {
		err = protocol.CompactPayload(&r.scratch, payload)
	}
	if err != nil {
		h.metrics.UpdatesDropped.WithLabelValues(dropReason(err)).Inc()
		if n := h.dropLog.allow(time.Now()); n > 0 {
			h.log.Warn("dropped producer payload", "room", r.name, "reason", err, "bytes", len(payload), "seq", seq, "dropped_since_last_log", n)
		}
		return nil, false
	}
	frame := protocol.AppendUpdate(make([]byte, 0, r.scratch.Len()+len(r.name)+96),
		protocol.Update{Room: r.name, Seq: seq, Prev: prev, Missed: missed, Data: r.scratch.Bytes()})
	return frame, true
}

// replayMeta carries a replayed update's ts, for the writers' replay-age
// histogram; right after encode, r.scratch holds its compact payload. Data
// stays nil: Socket.IO builds a replay's packet from its own frame.
func replayMeta(r *room) *outbox.UpdateMeta {
	return &outbox.UpdateMeta{Published: publishedAt(r.scratch.Bytes())}
}

// publishedAt returns the payload's top-level "ts" (unix milliseconds), or
// 0. It runs once per update, not per client.
func publishedAt(data []byte) int64 {
	var v struct {
		TS json.Number `json:"ts"`
	}
	if json.Unmarshal(data, &v) != nil {
		return 0
	}
	ts, err := v.TS.Int64()
	if err != nil {
		return 0
	}
	return ts
}

var errTooLarge = errors.New("payload is larger than limits.max_update_bytes")

func dropReason(err error) string {
	switch err {
	case errTooLarge:
		return "too_large"
	case protocol.ErrPayloadNotUTF8:
		return "not_utf8"
	case protocol.ErrPayloadNotObject:
		return "not_object"
	default:
		return "invalid_json"
	}
}

// Rooms returns the number of rooms this gateway holds a subscription for.
func (h *Hub) Rooms() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms)
}

// Members returns the number of local clients in a room.
func (h *Hub) Members(name string) int {
	h.mu.Lock()
	r := h.rooms[name]
	h.mu.Unlock()
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members)
}

// rateLimitedLog lets one log line through per interval and counts the
// events it held back, so a broken producer cannot flood the log.
type rateLimitedLog struct {
	next       atomic.Int64 // unix nanos before which lines are held back
	suppressed atomic.Int64
}

const dropLogInterval = 10 * time.Second

// allow returns the number of events to report (this one plus those held
// back), or 0 when this one should not be logged.
func (l *rateLimitedLog) allow(now time.Time) int64 {
	next := l.next.Load()
	if now.UnixNano() < next || !l.next.CompareAndSwap(next, now.Add(dropLogInterval).UnixNano()) {
		l.suppressed.Add(1)
		return 0
	}
	return l.suppressed.Swap(0) + 1
}
