// Package hub keeps the gateway's rooms: which local clients are in each
// room, the one NATS subscription each room with local clients holds, the
// room's recent updates in memory, and the fan-out of every update from
// that subscription to the clients.
//
// Interest follows clients: a room's subscription is taken on its first
// local join and dropped when its last local client has gone (after an
// optional linger, so that a flapping room does not churn subscriptions).
// Each update is validated once and becomes a publication (a value:
// room, seq, prev, payload, ts), the same one queued to every client's
// outbox, which never blocks (see package outbox for what happens to a
// client that falls behind). The hub knows no wire format: transports
// encode a publication on first use and share the encoding.
//
// With history, updates carry the stream's seq and prev. The hub keeps
// each room gap-free: a live update whose prev is newer than the last one
// the room has seen means updates were missed (a NATS reconnect, a
// dropped message), and they are fetched from the stream and delivered
// first. Each room keeps its recent valid updates in a ring (see
// Options.Memory), so a join's snapshot and a resume inside that window
// cost no request to the stream. A join gets the room's latest valid
// update; a join with since is a catch-up: the client is not yet a live
// member, its replay (from the ring, or read from the stream in batches
// outside every lock) is fed to its outbox a page at a time as the client
// reads (outbox.Feed), and when it has everything the room has seen it
// becomes a live member, under the room's lock, so nothing is missed or
// sent twice.
//
// Lock order: Hub.mu, then room.deliverMu, then room.mu, then an outbox's
// own lock. Hub.mu is never held while waiting for a room's lock, and no
// lock is held across a request to NATS: a stream read happens with no
// lock held and its result is merged by seq. deliverMu orders what moves
// a room forward (live updates, repairs, refreshes, a cold room's first
// load); room.mu guards the members, the catch-ups and the ring, and is
// what a join or leave takes. nats.go's Subscribe and Unsubscribe only
// queue a protocol line, so Hub.mu is held across them.
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
	// Latest returns the newest stored update of the room with a seq
	// below before (0: the newest of all).
	Latest(ctx context.Context, room string, before uint64) (m broker.Msg, found bool, err error)
	// From returns up to limit stored updates with seq >= from, oldest
	// first, in one request.
	From(ctx context.Context, room string, from uint64, limit int) ([]broker.Msg, error)
	// Since returns up to limit stored updates stored at or after t,
	// oldest first, in one request.
	Since(ctx context.Context, room string, t time.Time, limit int) ([]broker.Msg, error)
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
	// HistoryDepth is what the stream keeps per room: the most a resume
	// can get back.
	HistoryDepth int
	// Memory and MemoryBytes bound the recent updates each room keeps in
	// memory (count, and bytes of encoded frames). Without history only
	// the latest is kept (the snapshot).
	Memory      int
	MemoryBytes int
	// FetchTimeout bounds one read of the stream.
	FetchTimeout time.Duration
	// ResumeRate (resumes per second, sustained) and ResumeBurst bound the
	// joins with since of one client (JoinRequest.Budget).
	ResumeRate  float64
	ResumeBurst int
	// Linger keeps an emptied room's subscription this long, in case the
	// room is joined again.
	Linger time.Duration
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

// Errors of Join besides ErrSubscribe.
var (
	// ErrRateLimited: the client's resume budget is spent.
	ErrRateLimited = errors.New("hub: too many resumes")
	// ErrHistoryUnavailable: a resume needed the stream, which did not
	// answer in time.
	ErrHistoryUnavailable = errors.New("hub: history unavailable")
)

// readBatch is how many stored updates one read of the stream asks for.
const readBatch = 256

// maxWalkBack bounds how many refused payloads a cold room's snapshot
// search steps over before giving up on an older valid one.
const maxWalkBack = 8

// New returns an empty hub that subscribes through src. It registers the
// rooms gauge on reg.
func New(src Source, opts Options, m *metrics.Metrics, reg prometheus.Registerer, log *slog.Logger) *Hub {
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 2 * time.Second
	}
	if opts.HistoryDepth <= 0 {
		opts.HistoryDepth = 100
	}
	if opts.Memory <= 0 {
		opts.Memory = opts.HistoryDepth
	}
	if opts.MemoryBytes <= 0 {
		opts.MemoryBytes = 1 << 20
	}
	if opts.History == nil {
		opts.Memory = 1
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
	// HistoryCount or HistoryAge ask for the room's recent updates: the
	// last HistoryCount, or those of the last HistoryAge (at least the
	// latest), then live.
	HistoryCount int
	HistoryAge   time.Duration
	// Budget, if not nil, is the client's resume budget (NewBudget); a
	// history window costs as much as a resume.
	Budget *Budget
}

func (r JoinRequest) resume() bool { return r.HasSince && r.Since > 0 }

func (r JoinRequest) window() bool { return r.HistoryCount > 0 || r.HistoryAge > 0 }

// Join adds m to the room, taking the room's subscription if m is its
// first local client. It queues the joined reply and then, in order: the
// room's latest valid update (a plain join), or every stored update after
// since, paged as m's queue drains (a resume; the first flagged missed
// when since is older than what is stored); live updates follow with no
// gap and no duplicate. Joining a room m is already in only repeats the
// reply. On error m is not in the room and no reply was queued.
func (h *Hub) Join(m Member, req JoinRequest) error {
	if !protocol.ValidRoom(req.Room) {
		return fmt.Errorf("hub: invalid room %q", req.Room)
	}
	if (req.resume() || req.window()) && h.opts.History != nil && !req.Budget.allow(time.Now()) {
		return ErrRateLimited
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
	reply := outbox.Message{Reply: &outbox.Reply{Kind: outbox.Joined, Room: req.Room, ID: req.ID, HasID: req.HasID}}
	// The whole join is answered within FetchTimeout, however many reads
	// of the stream it needs.
	deadline := time.Now().Add(h.opts.FetchTimeout)
	if h.opts.History != nil {
		h.load(r, deadline)
	}

	r.mu.Lock()
	if r.has(m) {
		m.Push(reply)
		r.mu.Unlock()
		return nil // the reference taken above is released by the defer
	}
	if req.window() && h.opts.History != nil {
		return h.joinWindow(r, m, req, reply, deadline, &joined)
	}
	if !req.resume() || h.opts.History == nil {
		if last := r.ring.last(); last != nil {
			m.PushPair(reply, last.snapshot())
		} else {
			m.Push(reply)
		}
		r.addLocked(m)
		r.mu.Unlock()
		joined = true
		return nil
	}
	if req.Since > r.lastSeen && r.lastSeen > 0 && req.Since-r.lastSeen < resetGap {
		// This gateway's subscription is a little behind the one the
		// client came from: wait for it (with no lock held) rather than
		// ask the stream, as every client of a drained gateway would at
		// once; half the time, the rest is for the stream if need be.
		r.waitForLocked(req.Since, time.Now().Add(time.Until(deadline)/2))
	}
	pending, ok := r.replayLocked(req.Since)
	if ok {
		// From memory: one hold of the room's lock.
		m.Push(reply)
		joined = true
		if len(pending) == 0 {
			r.addLocked(m) // nothing after since: live at once
		} else {
			r.catchLocked(h, m, req.Since, pending, "memory")
		}
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()

	// The ring does not reach back to since, or this gateway has not seen
	// since yet: read the stream, with no lock held.
	cursor := req.Since
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	pending, missedAll, err := h.read(ctx, r, req.Since)
	cancel()
	if err != nil {
		h.log.Warn("resume: reading the stream failed", "room", r.name, "since", req.Since, "err", err)
		return ErrHistoryUnavailable
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if missedAll {
		// since is newer than anything stored (another history, a reset
		// stream): the client gets the latest, flagged, and goes on from
		// there.
		cursor = r.lastSeen
		if last := r.ring.last(); last != nil {
			pending, cursor = []entry{last.flagMissed()}, last.prev
		}
	}
	m.Push(reply)
	if r.has(m) {
		return nil
	}
	joined = true
	r.catchLocked(h, m, cursor, pending, "stream")
	return nil
}

// joinWindow answers a join that asks for recent history: the window
// from the ring when it reaches back far enough, else from the stream
// (read with no lock held), then live through the catch-up. r.mu is held
// on entry and released.
func (h *Hub) joinWindow(r *room, m Member, req JoinRequest, reply outbox.Message, deadline time.Time, joined *bool) error {
	from := time.Now().Add(-req.HistoryAge)
	pending, ok := r.windowLocked(req.HistoryCount, from)
	source := "memory"
	if !ok {
		r.mu.Unlock()
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		read, err := h.readWindow(ctx, r, req.HistoryCount, from)
		cancel()
		r.mu.Lock()
		switch {
		case err != nil:
			// The window is a nicety: give what memory has rather than
			// refuse the join.
			h.log.Warn("history window: reading the stream failed; sending what memory has", "room", r.name, "err", err)
			pending, _ = r.windowLocked(req.HistoryCount, from)
			if len(pending) == 0 && r.ring.last() != nil {
				pending = []entry{*r.ring.last()}
			}
			source = "memory"
		case len(read) == 0 && r.ring.last() != nil:
			pending = []entry{*r.ring.last()} // an empty window still shows the latest
		default:
			pending, source = read, "stream"
		}
	}
	defer r.mu.Unlock()
	m.Push(reply)
	if r.has(m) {
		return nil
	}
	*joined = true
	if len(pending) == 0 {
		r.addLocked(m)
		return nil
	}
	r.catchLocked(h, m, pending[0].prev, pending, source)
	return nil
}

// load makes sure a cold room has the latest valid stored update in its
// ring, asking the stream at most once at a time per room (other joiners
// wait for that answer, until their own deadline) and never under a lock.
// A room with nothing stored is asked once, not on every join: the room's
// subscription was taken before the question, so anything published since
// arrives live.
func (h *Hub) load(r *room, deadline time.Time) {
	r.loadMu.Lock()
	if r.loaded {
		r.loadMu.Unlock()
		return
	}
	if ch := r.loading; ch != nil {
		r.loadMu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
		}
		return
	}
	r.mu.Lock()
	warm := r.ring.len() > 0
	r.mu.Unlock()
	if warm {
		r.loaded = true
		r.loadMu.Unlock()
		return
	}
	ch := make(chan struct{})
	r.loading = ch
	r.loadMu.Unlock()

	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	msg, found, err := h.latestValid(ctx, r.name)
	cancel()
	if err != nil {
		h.log.Warn("loading the latest update failed", "room", r.name, "err", err)
	} else if found {
		r.deliverMu.Lock()
		if msg.Seq > r.lastSeen {
			h.processLocked(r, msg.Seq, msg.Prev, msg.Data, msg.Time, true)
		}
		r.deliverMu.Unlock()
	}
	r.loadMu.Lock()
	r.loaded = err == nil
	r.loading = nil
	r.loadMu.Unlock()
	close(ch)
}

// latestValid returns the newest stored update of the room that the hub
// would forward, stepping back over refused payloads: every viewer's
// snapshot is the same latest valid update.
func (h *Hub) latestValid(ctx context.Context, room string) (broker.Msg, bool, error) {
	before := uint64(0)
	for range maxWalkBack {
		msg, found, err := h.opts.History.Latest(ctx, room, before)
		h.countRequest("latest", err)
		if err != nil || !found {
			return broker.Msg{}, false, err
		}
		if h.valid(msg.Data) {
			return msg, true, nil
		}
		before = msg.Seq
	}
	return broker.Msg{}, false, nil
}

// read reads the stored updates of the room after since from the stream,
// encoded for the replay. missedAll says since is newer than anything
// stored. When since itself is no longer stored, the first update is
// flagged missed.
func (h *Hub) read(ctx context.Context, r *room, since uint64) (out []entry, missedAll bool, err error) {
	msgs, err := h.opts.History.From(ctx, r.name, since, readBatch)
	h.countRequest("range", err)
	if err != nil {
		return nil, false, err
	}
	if len(msgs) == 0 {
		return nil, true, nil
	}
	prev, missed := since, true
	if msgs[0].Seq == since {
		msgs, missed = msgs[1:], false
	}
	return h.encodeRun(r, msgs, prev, missed), false, nil
}

// encodeRun encodes stored updates for a replay, skipping refused ones:
// prev is the seq before the first, and each next one's prev the last
// one kept; missed flags the first.
func (h *Hub) encodeRun(r *room, msgs []broker.Msg, prev uint64, missed bool) []entry {
	out := make([]entry, 0, len(msgs))
	var buf bytes.Buffer
	for _, msg := range msgs {
		e, ok := h.entryFor(&buf, r.name, msg.Seq, prev, missed, msg.Data, msg.Time)
		if !ok {
			continue
		}
		out = append(out, e)
		prev, missed = msg.Seq, false
	}
	return out
}

// readWindow reads a join's history window from the stream: the last
// count stored updates, or those stored since from.
func (h *Hub) readWindow(ctx context.Context, r *room, count int, from time.Time) ([]entry, error) {
	var msgs []broker.Msg
	if count == 0 {
		var err error
		msgs, err = h.opts.History.Since(ctx, r.name, from, readBatch)
		h.countRequest("range", err)
		if err != nil {
			return nil, err
		}
	} else {
		// The stream reads forward only: scan what is stored (at most
		// depth+1 updates) and keep the last count.
		next := uint64(1)
		for range h.opts.HistoryDepth/readBatch + 2 {
			page, err := h.opts.History.From(ctx, r.name, next, readBatch)
			h.countRequest("range", err)
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, page...)
			if len(msgs) > count+1 {
				msgs = msgs[len(msgs)-count-1:]
			}
			if len(page) < readBatch {
				break
			}
			next = page[len(page)-1].Seq + 1
		}
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	prev := uint64(0)
	if count > 0 && len(msgs) > count {
		prev, msgs = msgs[0].Seq, msgs[1:] // the one before the window: its seq is the first's prev
	}
	return h.encodeRun(r, msgs, prev, false), nil
}

func (h *Hub) countRequest(kind string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	h.metrics.HistoryRequests.WithLabelValues(kind, result).Inc()
}

// catchup is one resuming client of a room: not yet a live member, it is
// fed its replay a page at a time by its outbox (outbox.Feed) until it
// has everything the room has, and then becomes a live member.
//
// Its own lock, mu, comes after room.mu: pages from what it has read
// ahead are queued under mu alone, so a storm of resumes does not queue
// on the room's lock in front of the live fan-out; the ring and the switch
// to live take room.mu first.
type catchup struct {
	h *Hub
	r *room
	m Member

	mu      sync.Mutex
	cursor  uint64  // seq of the last update queued to the client
	pending []entry // what comes next, read ahead
	source  string  // where pending came from, for the metric
	gone    bool    // the client left the room or went away
}

// leave marks c gone: nothing more is queued after it returns.
func (c *catchup) leave() {
	c.mu.Lock()
	c.gone, c.pending = true, nil
	c.mu.Unlock()
}

// Next queues the next page of the replay, or makes the client a live
// member when it has caught up. It runs on the client's writer.
func (c *catchup) Next(o *outbox.Outbox, max int) bool {
	c.mu.Lock()
	if c.gone || len(c.pending) > 0 {
		return c.pushLocked(o, max)
	}
	c.mu.Unlock()

	r := c.r
	r.mu.Lock()
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		r.mu.Unlock()
		return true
	}
	switch pending, ok := r.replayLocked(c.cursor); {
	case r.lastSeen < c.cursor:
		// This gateway has not yet seen what the client already has:
		// wait for the room (processLocked wakes catch-ups), so that
		// nothing older than since is sent.
		r.waiting[c.m] = c
		c.mu.Unlock()
		r.mu.Unlock()
		return false
	case ok && len(pending) == 0:
		delete(r.catching, c.m)
		delete(r.waiting, c.m)
		r.addLocked(c.m)
		c.mu.Unlock()
		r.mu.Unlock()
		return true
	case ok:
		c.pending, c.source = pending, "memory"
		r.mu.Unlock()
		return c.pushLocked(o, max)
	}
	// The ring has moved past the cursor (a long replay of a busy room):
	// read on from the stream, with no lock held.
	cursor := c.cursor
	c.mu.Unlock()
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.h.opts.FetchTimeout)
	pending, _, err := c.h.read(ctx, r, cursor)
	cancel()

	r.mu.Lock()
	c.mu.Lock()
	switch {
	case c.gone:
	case err == nil && len(pending) > 0:
		c.pending, c.source = pending, "stream"
	default:
		// Nothing to bridge the gap with: go on from what the ring has,
		// flagged, rather than stall.
		c.h.log.Warn("replay: reading the stream failed; the client will see a gap", "room", r.name, "after", cursor, "err", err)
		if first := r.ring.first(); first != nil && first.seq > cursor {
			c.pending = append([]entry{first.flagMissed()}, r.ring.after(first.seq)...)
			c.source = "memory"
		} else {
			r.waiting[c.m] = c
		}
	}
	r.mu.Unlock()
	return c.pushLocked(o, max)
}

// pushLocked queues up to max pending updates and unlocks c.mu.
func (c *catchup) pushLocked(o *outbox.Outbox, max int) (done bool) {
	if c.gone {
		c.mu.Unlock()
		return true
	}
	n := min(max, len(c.pending))
	for _, e := range c.pending[:n] {
		o.Push(e.replay())
		c.cursor = e.seq
	}
	clear(c.pending[:n])
	c.pending = c.pending[n:]
	source := c.source
	c.mu.Unlock()
	if n > 0 {
		c.h.metrics.Replayed.WithLabelValues(source).Add(float64(n))
	}
	return false
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
		r = newRoom(name, h.opts.Memory, h.opts.MemoryBytes)
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

// lookup returns the room, or nil. A room m is in cannot go away while m
// is in it (m holds a reference), so the caller may use it after Hub.mu
// is released.
func (h *Hub) lookup(name string) *room {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rooms[name]
}

// Leave removes m from the room and queues the left reply; no update of the
// room is queued for m after it. Leaving a room m is not in only queues the
// reply.
func (h *Hub) Leave(m Member, name string, id int64, hasID bool) {
	left := outbox.Message{Reply: &outbox.Reply{Kind: outbox.Left, Room: name, ID: id, HasID: hasID}}
	r := h.lookup(name)
	if r == nil {
		m.Push(left)
		return
	}
	r.mu.Lock()
	was := r.removeLocked(m)
	m.Push(left)
	r.mu.Unlock()
	if was {
		h.release(r)
	}
}

// LeaveAll removes a disconnecting m from rooms, without replies.
func (h *Hub) LeaveAll(m Member, rooms []string) {
	for _, name := range rooms {
		r := h.lookup(name)
		if r == nil {
			continue
		}
		r.mu.Lock()
		was := r.removeLocked(m)
		r.mu.Unlock()
		if was {
			h.release(r)
		}
	}
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

// deliver runs on the room subscription's delivery goroutine. A repair
// holds that goroutine (so the room's later updates wait, in order) but
// no lock while it reads the stream.
func (h *Hub) deliver(r *room, d broker.Delivery) {
	r.deliverMu.Lock()
	defer r.deliverMu.Unlock()
	if d.Seq == 0 { // no history: no order to keep beyond NATS's own
		h.processLocked(r, 0, 0, d.Payload, time.Now(), true)
		return
	}
	if d.Seq <= r.lastSeen {
		if d.Prev != 0 || r.lastSeen-d.Seq < resetGap {
			return // already delivered, by a repair or a cold room's load
		}
		// A room's first update far below what the room has seen: the
		// stream was deleted and created again. Start over, or the room
		// would stay silent until the new numbers pass the old ones.
		h.log.Warn("room sequence went back: the history stream was reset", "room", r.name, "seq", d.Seq, "last_seen", r.lastSeen)
		r.mu.Lock()
		r.lastSeen, r.lastValid = 0, 0
		r.ring.reset()
		r.mu.Unlock()
	}
	if r.lastSeen != 0 && d.Prev > r.lastSeen {
		h.repairLocked(r, d.Prev)
	}
	if d.Seq > r.lastSeen {
		h.processLocked(r, d.Seq, d.Prev, d.Payload, d.Time, true)
	}
}

// repairLocked delivers the stored updates of the room after lastSeen up
// to and including upTo, which the live subscription missed. deliverMu
// must be held; it is released while the stream is read.
func (h *Hub) repairLocked(r *room, upTo uint64) {
	after := r.lastSeen
	r.deliverMu.Unlock()
	msgs, err := h.fetchRange(r.name, after, upTo)
	r.deliverMu.Lock()
	n := h.mergeLocked(r, after, upTo, msgs)
	if err != nil || n < 0 {
		h.log.Warn("could not fetch missed updates; clients will see a gap", "room", r.name, "after", after, "err", err)
		// The ring must stay a contiguous run: resumes from before the gap
		// go to the stream.
		r.mu.Lock()
		r.ring.reset()
		r.mu.Unlock()
		return
	}
	h.metrics.Repaired.Add(float64(n))
	h.log.Info("delivered missed updates from history", "room", r.name, "count", n)
}

// fetchRange reads the stored updates from after to upTo, retrying within
// FetchTimeout: right after a NATS failover the stream's API may not
// answer yet (leader elections).
func (h *Hub) fetchRange(room string, after, upTo uint64) ([]broker.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.FetchTimeout)
	defer cancel()
	var all []broker.Msg
	for wait := 50 * time.Millisecond; ; {
		from := after
		if len(all) > 0 {
			from = all[len(all)-1].Seq
		}
		msgs, err := h.opts.History.From(ctx, room, from, readBatch)
		h.countRequest("range", err)
		if err == nil {
			if len(all) > 0 && len(msgs) > 0 && msgs[0].Seq == from {
				msgs = msgs[1:] // read on from the last one we have
			}
			all = append(all, msgs...)
			if len(msgs) == 0 || all[len(all)-1].Seq >= upTo {
				return all, nil
			}
			continue
		}
		if ctx.Err() != nil {
			return all, err
		}
		select {
		case <-ctx.Done():
			return all, err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// mergeLocked processes the stored updates msgs (read from after on) that
// the room has not seen, up to upTo, and returns how many; -1 when msgs do
// not continue from after (after is no longer stored). deliverMu must be
// held.
func (h *Hub) mergeLocked(r *room, after, upTo uint64, msgs []broker.Msg) int {
	if len(msgs) == 0 || msgs[0].Seq != after {
		return -1
	}
	n := 0
	prev := after
	for _, msg := range msgs[1:] {
		if msg.Seq > upTo {
			break
		}
		if msg.Seq > r.lastSeen {
			h.processLocked(r, msg.Seq, prev, msg.Data, msg.Time, true)
			n++
		}
		prev = msg.Seq
	}
	return n
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
		fctx, cancel := context.WithTimeout(ctx, h.opts.FetchTimeout)
		msg, found, err := h.opts.History.Latest(fctx, r.name, 0)
		cancel()
		h.countRequest("latest", err)
		r.deliverMu.Lock()
		switch {
		case err != nil:
			h.log.Warn("refresh after reconnect failed", "room", r.name, "err", err)
		case !found || msg.Seq <= r.lastSeen:
		case r.lastSeen == 0:
			h.processLocked(r, msg.Seq, msg.Prev, msg.Data, msg.Time, true)
		default:
			h.repairLocked(r, msg.Seq)
		}
		r.deliverMu.Unlock()
	}
}

// processLocked validates and encodes one update once, makes it the room's
// latest and, if fanOut, queues the same bytes to every live member and
// wakes the catch-ups. deliverMu must be held.
func (h *Hub) processLocked(r *room, seq, prev uint64, payload []byte, at time.Time, fanOut bool) {
	if at.IsZero() {
		at = time.Now()
	}
	if fanOut {
		h.metrics.UpdatesReceived.Inc()
	}
	// A refused update is never forwarded, so the next one's prev is the
	// last update clients actually got: they see no false gap.
	if seq != 0 && prev == r.lastSeen && r.lastValid != 0 {
		prev = r.lastValid
	}
	e, ok := h.entryFor(&r.scratch, r.name, seq, prev, false, payload, at)
	if !ok {
		r.mu.Lock()
		r.advanceLocked(max(r.lastSeen, seq))
		r.mu.Unlock()
		return
	}
	msg := outbox.Message{Pub: e.pub}

	conflated, n := 0, 0
	r.mu.Lock()
	if seq != 0 {
		r.advanceLocked(seq)
		r.lastValid = seq
	}
	r.ring.push(e)
	if fanOut {
		for _, m := range r.members {
			if m.Push(msg) == outbox.Conflated {
				conflated++
			}
		}
		n = len(r.members)
		for m := range r.waiting {
			m.Wake()
		}
		clear(r.waiting)
	}
	r.mu.Unlock()

	h.metrics.Deliveries.Add(float64(n))
	if conflated > 0 {
		h.metrics.Conflated.Add(float64(conflated))
	}
}

// valid reports whether the hub would forward payload.
func (h *Hub) valid(payload []byte) bool {
	var buf bytes.Buffer
	return len(payload) <= h.opts.MaxUpdateBytes && protocol.CompactPayload(&buf, payload) == nil
}

// entryFor validates a payload and makes its publication once;
// invalid payloads are counted, logged (rate-limited) and refused. buf is
// scratch space.
func (h *Hub) entryFor(buf *bytes.Buffer, room string, seq, prev uint64, missed bool, payload []byte, at time.Time) (entry, bool) {
	buf.Reset()
	err := errTooLarge
	if len(payload) <= h.opts.MaxUpdateBytes {
		err = protocol.CompactPayload(buf, payload)
	}
	if err != nil {
		h.metrics.UpdatesDropped.WithLabelValues(dropReason(err)).Inc()
		if n := h.dropLog.allow(time.Now()); n > 0 {
			h.log.Warn("dropped producer payload", "room", room, "reason", err, "bytes", len(payload), "seq", seq, "dropped_since_last_log", n)
		}
		return entry{}, false
	}
	data := append(make([]byte, 0, buf.Len()), buf.Bytes()...)
	pub := outbox.NewPublication(room, seq, prev, missed, data, publishedAt(data))
	return entry{seq: seq, prev: prev, at: at, pub: pub}, true
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

// Members returns the number of local clients in a room, catching up or
// live.
func (h *Hub) Members(name string) int {
	r := h.lookup(name)
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members) + len(r.catching)
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
