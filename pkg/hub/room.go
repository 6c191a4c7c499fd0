package hub

import (
	"bytes"
	"sync"
	"time"

	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/ratelimit"
)

// room is one room on this gateway. See the package doc for its locks.
type room struct {
	name string

	// Owned by Hub.mu.
	sub    broker.Subscription
	refs   int         // members plus joins in progress
	linger *time.Timer // pending unsubscribe of an emptied room

	// loadMu guards the cold room's one question to the stream.
	loadMu  sync.Mutex
	loaded  bool          // the stream was asked for the latest update (found or not)
	loading chan struct{} // closed when the question in flight is answered

	deliverMu sync.Mutex
	scratch   bytes.Buffer // payload compaction of live updates

	mu        sync.Mutex
	members   []Member       // live members, dense for a fast fan-out loop
	index     map[Member]int // position in members
	catching  map[Member]*catchup
	waiting   map[Member]*catchup // catch-ups with nothing to send until the room moves
	ring      ring                // recent valid updates, oldest first
	lastSeen  uint64              // seq of the newest update processed, valid or not (written under deliverMu and mu)
	lastValid uint64              // seq of the newest update forwarded
	moved     chan struct{}       // closed (and replaced) when lastSeen moves; nil until asked for
}

// movedLocked returns a channel closed when the room's lastSeen next moves.
func (r *room) movedLocked() <-chan struct{} {
	if r.moved == nil {
		r.moved = make(chan struct{})
	}
	return r.moved
}

// waitForLocked waits, with r.mu released meanwhile, until the room has
// seen seq or the deadline passes. r.mu is held on entry and on return.
func (r *room) waitForLocked(seq uint64, deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for r.lastSeen < seq {
		moved := r.movedLocked()
		r.mu.Unlock()
		select {
		case <-moved:
			r.mu.Lock()
		case <-t.C:
			r.mu.Lock()
			return
		}
	}
}

// advanceLocked records a processed update's seq and wakes those waiting
// for the room to move.
func (r *room) advanceLocked(seq uint64) {
	r.lastSeen = seq
	if r.moved != nil {
		close(r.moved)
		r.moved = nil
	}
}

func newRoom(name string, memory, memoryBytes int) *room {
	return &room{
		name:     name,
		index:    make(map[Member]int),
		catching: make(map[Member]*catchup),
		waiting:  make(map[Member]*catchup),
		ring:     ring{max: memory, maxBytes: memoryBytes},
	}
}

// has reports whether m is in the room, live or catching up.
func (r *room) has(m Member) bool {
	if _, ok := r.index[m]; ok {
		return true
	}
	_, ok := r.catching[m]
	return ok
}

func (r *room) addLocked(m Member) {
	r.index[m] = len(r.members)
	r.members = append(r.members, m)
}

// catchLocked makes m a catch-up of the room, fed from cursor on,
// pending first.
func (r *room) catchLocked(h *Hub, m Member, cursor uint64, pending []entry, source string) {
	c := &catchup{h: h, r: r, m: m, cursor: cursor, pending: pending, source: source}
	r.catching[m] = c
	m.AddFeed(c)
}

// removeLocked takes m out of the room, live or catching up, and reports
// whether it was in.
func (r *room) removeLocked(m Member) bool {
	if c, ok := r.catching[m]; ok {
		c.leave()
		delete(r.catching, m)
		delete(r.waiting, m)
		return true
	}
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

// replayLocked returns what a client that has everything up to since
// lacks, from the ring; ok is false when the ring cannot tell (it does
// not reach back to since) or this gateway has not seen since yet.
func (r *room) replayLocked(since uint64) (pending []entry, ok bool) {
	switch {
	case since > r.lastSeen:
		return nil, false
	case since >= r.lastValid:
		return nil, true // nothing forwarded after since
	}
	first := r.ring.first()
	if first == nil || (first.seq > since && first.prev != since) {
		return nil, false
	}
	return r.ring.after(since), true
}

// windowLocked returns a join's history window from the ring: the last
// count entries, or those from from on (at least the latest); ok is false
// when the ring does not reach back far enough.
func (r *room) windowLocked(count int, from time.Time) (pending []entry, ok bool) {
	n := r.ring.len()
	switch {
	case n == 0:
		return nil, false
	case count > 0:
		if n < count {
			return nil, false
		}
		return r.ring.from(n - count), true
	case r.ring.first().at.After(from):
		return nil, false
	}
	i := n - 1
	for i > 0 && !r.ring.at(i-1).at.Before(from) {
		i--
	}
	return r.ring.from(i), true
}

// entry is one update of the room, shared by every client that gets it.
type entry struct {
	seq, prev uint64
	at        time.Time // when the stream stored it (or the gateway got it)
	pub       *outbox.Publication
}

// replay is the entry as a replayed update.
func (e *entry) replay() outbox.Message { return outbox.Message{Pub: e.pub, Replay: true} }

// snapshot is the entry as a join's snapshot.
func (e *entry) snapshot() outbox.Message { return outbox.Message{Pub: e.pub, Snapshot: true} }

// flagMissed returns a copy of e flagged missed: the client lacks updates
// before it that nobody can give it any more.
func (e *entry) flagMissed() entry {
	return entry{seq: e.seq, prev: e.prev, at: e.at, pub: e.pub.WithMissed()}
}

// ring holds a room's recent updates, bounded by count and by bytes; the
// newest is always kept (it is the snapshot).
type ring struct {
	max, maxBytes int
	buf           []entry // circular, len(buf) <= max
	start, n      int
	bytes         int
}

func (q *ring) len() int { return q.n }

func (q *ring) at(i int) *entry { return &q.buf[(q.start+i)%len(q.buf)] }

func (q *ring) first() *entry {
	if q.n == 0 {
		return nil
	}
	return q.at(0)
}

func (q *ring) last() *entry {
	if q.n == 0 {
		return nil
	}
	return q.at(q.n - 1)
}

func (q *ring) push(e entry) {
	for q.n > 0 && (q.n >= q.max || q.bytes+e.pub.Size() > q.maxBytes) {
		q.popFront()
	}
	if len(q.buf) < q.max && q.n == len(q.buf) {
		// Grow on demand: most rooms never fill their ring.
		nb := make([]entry, min(q.max, max(4, 2*len(q.buf))))
		for i := range q.n {
			nb[i] = *q.at(i)
		}
		q.buf, q.start = nb, 0
	}
	*q.at(q.n) = e
	q.n++
	q.bytes += e.pub.Size()
}

func (q *ring) popFront() {
	e := q.at(0)
	q.bytes -= e.pub.Size()
	*e = entry{}
	q.start = (q.start + 1) % len(q.buf)
	q.n--
}

// after returns a copy of the entries with a seq above since.
func (q *ring) after(since uint64) []entry {
	i := 0
	for i < q.n && q.at(i).seq <= since {
		i++
	}
	out := make([]entry, 0, q.n-i)
	for ; i < q.n; i++ {
		out = append(out, *q.at(i))
	}
	return out
}

// from returns a copy of the entries from the i-th on.
func (q *ring) from(i int) []entry {
	out := make([]entry, 0, q.n-i)
	for ; i < q.n; i++ {
		out = append(out, *q.at(i))
	}
	return out
}

func (q *ring) reset() {
	clear(q.buf)
	q.start, q.n, q.bytes = 0, 0, 0
}

// Budget bounds one client's resumes (joins with since) with a token
// bucket, so that a join/leave loop cannot turn one connection into a
// load on the history stream. A nil Budget allows everything.
type Budget struct {
	mu sync.Mutex // Join may run on any goroutine of the client's transport
	b  ratelimit.Bucket
}

// NewBudget returns a resume budget for one client, or nil when the hub
// has none configured.
func (h *Hub) NewBudget() *Budget {
	if h.opts.ResumeRate <= 0 || h.opts.ResumeBurst <= 0 {
		return nil
	}
	return &Budget{b: ratelimit.New(h.opts.ResumeRate, h.opts.ResumeBurst, time.Now())}
}

func (b *Budget) allow(now time.Time) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Take(now)
}
