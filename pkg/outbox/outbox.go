// Package outbox is the bounded outgoing queue of one client connection.
//
// The hub pushes messages from its fan-out path, which must never wait for
// a client; the connection's writer takes everything queued at once and
// writes it as one frame. The policy for a client that falls behind is the
// dashboard one, in two steps:
//
//  1. Conflation: once Limits.ConflateAfter messages or half of
//     Limits.MaxBytes are waiting, a new update of a room replaces the
//     newest queued update of the same room in place (latest wins).
//     Per-room order is kept, older values are skipped, and a client with
//     seq numbers sees the skip as a gap.
//  2. Overflow: if a push would take the queue past Limits.MaxMessages or
//     Limits.MaxBytes, the outbox drops everything it holds, refuses all
//     further pushes and calls the overflow callback once; the connection
//     then closes with 4008 (too slow).
//
// Neither step touches a replay (a resuming client's stored updates): it
// is not pushed at once but drawn from a Feed a page at a time when the
// queue runs low, so a backlog of any length passes through the smallest
// queue, and replayed messages are never replaced.
//
// So the queue holds at most MaxBytes whatever the client does (the
// writer may hold one more batch of at most that size while it writes),
// and the cost of a push is O(1) except while conflating, when it is
// bounded by the queue length.
package outbox

import (
	"sync"

	"github.com/roomcast/roomcast/pkg/protocol"
)

// Message is one queued server message: an update (Pub) or a reply
// (Reply), as values. How a message looks on the wire is the transport's
// business; the queue only needs its room and its size.
type Message struct {
	// Pub is the update, shared with every client that gets it; nil for a
	// reply.
	Pub *Publication
	// Reply is a reply to the client's command; nil for an update.
	Reply *Reply
	// Replay marks a stored update replayed to a resuming client: it is
	// never replaced by conflation (a resume must arrive whole), and it is
	// not live, so its age is not publish-to-send latency.
	Replay bool
	// Snapshot marks the latest update sent on a join: not live either,
	// but a newer update of the room may replace it (latest wins).
	Snapshot bool
}

// IsUpdate reports whether m is a room update, which a newer update of the
// same room may replace; replies are never replaced.
func (m *Message) IsUpdate() bool { return m.Pub != nil }

// Room is the room of an update or of a reply ("" for a reply to a
// command that named none).
func (m *Message) Room() string {
	if m.Pub != nil {
		return m.Pub.Room
	}
	if m.Reply != nil {
		return m.Reply.Room
	}
	return ""
}

// Size is what m counts against Limits.MaxBytes: about the length of its
// native encoding.
func (m *Message) Size() int {
	if m.Pub != nil {
		return m.Pub.size
	}
	if m.Reply != nil {
		return replyOverhead + len(m.Reply.Room) + len(m.Reply.Message)
	}
	return 0
}

// Live reports whether m is a live update: neither a snapshot nor a
// replay, so its age at the write is publish-to-send latency.
func (m *Message) Live() bool { return m.Pub != nil && !m.Replay && !m.Snapshot }

// Published is the update's ts in unix milliseconds, or 0.
func (m *Message) Published() int64 {
	if m.Pub == nil {
		return 0
	}
	return m.Pub.Published
}

// AppendJSON appends m's native encoding (the text of a /ws message, the
// data of an SSE event): an update's is made once per update and shared,
// a reply's is made here.
func (m *Message) AppendJSON(dst []byte) []byte {
	if m.Pub != nil {
		return append(dst, m.Pub.JSON()...)
	}
	return m.Reply.AppendJSON(dst)
}

// Publication is one room update as a value, made once per update per
// gateway and shared by every client's queue. Transports encode it on
// first use (Encoded) and share the result, so an update is encoded at
// most once per gateway per encoding, whatever the number of clients.
// Its fields must not be modified after it is made.
type Publication struct {
	Room string
	// Seq and Prev are the room's sequence numbers (0 when history is off).
	Seq, Prev uint64
	// Missed: updates between the client's since and this one are lost.
	Missed bool
	// Data is the producer's payload, compacted JSON.
	Data []byte
	// Published is the payload's "ts" (unix milliseconds at publish), 0 if
	// it has none; writers measure publish-to-send latency with it.
	Published int64

	size int // about len(JSON()), for the queue's byte bound
	enc  [numEncodings]encoded
}

// Encoding names one transport's cached encoding of a publication.
type Encoding uint8

// The encodings cached on a publication, one slot each. The list is here,
// not in the transports, so that two of them cannot take the same slot.
const (
	EncJSON      Encoding = iota // the native JSON object (/ws text frames, SSE data)
	EncWSDeflate                 // /ws: the frame prepared for permessage-deflate
	EncSocketIO                  // Socket.IO: the update_data EVENT packet
	numEncodings
)

type encoded struct {
	once sync.Once
	v    any
}

// replyOverhead and updateOverhead approximate the JSON around a reply's
// and an update's variable parts.
const (
	replyOverhead  = 48
	updateOverhead = 64
)

// NewPublication makes the update of room with the given seq numbers and
// compact payload; published is its "ts" (unix ms) or 0.
func NewPublication(room string, seq, prev uint64, missed bool, data []byte, published int64) *Publication {
	return &Publication{Room: room, Seq: seq, Prev: prev, Missed: missed, Data: data, Published: published,
		size: updateOverhead + len(room) + len(data)}
}

// Size is about the length of p's native encoding: what it counts
// against a queue's or a room's byte bound.
func (p *Publication) Size() int { return p.size }

// WithMissed returns a copy of p flagged missed, with encodings of its own.
func (p *Publication) WithMissed() *Publication {
	return NewPublication(p.Room, p.Seq, p.Prev, true, p.Data, p.Published)
}

// Encoded returns p's encoding e, built by the first caller and shared by
// the rest. Every caller must pass the same build for e; the result must
// not be modified.
func (p *Publication) Encoded(e Encoding, build func(*Publication) any) any {
	c := &p.enc[e]
	c.once.Do(func() { c.v = build(p) })
	return c.v
}

// JSON is the native encoding of p: {"op":"update","room":...,"data":...},
// the text of a /ws message and of an SSE event.
func (p *Publication) JSON() []byte {
	return p.Encoded(EncJSON, encodeJSON).([]byte)
}

func encodeJSON(p *Publication) any {
	b := protocol.AppendUpdate(make([]byte, 0, p.size), protocol.Update{
		Room: p.Room, Seq: p.Seq, Prev: p.Prev, Missed: p.Missed, Data: p.Data})
	return b[:len(b):len(b)] // an append by a caller copies
}

// ReplyKind says what a reply answers.
type ReplyKind uint8

const (
	Joined ReplyKind = iota + 1 // a join succeeded
	Left                        // a leave was done
	Failed                      // a command was refused: Code and Message say why
)

// Reply answers one command of the client. ID and HasID echo the
// command's id.
type Reply struct {
	Kind    ReplyKind
	Room    string
	ID      int64
	HasID   bool
	Code    string // Failed only: one of protocol's Code constants
	Message string // Failed only
}

// AppendJSON appends the reply's native encoding.
func (r *Reply) AppendJSON(dst []byte) []byte {
	switch r.Kind {
	case Joined:
		return protocol.AppendJoined(dst, r.Room, r.ID, r.HasID)
	case Left:
		return protocol.AppendLeft(dst, r.Room, r.ID, r.HasID)
	}
	return protocol.AppendError(dst, &protocol.Error{Code: r.Code, Message: r.Message, Room: r.Room, ID: r.ID, HasID: r.HasID})
}

// ErrorReply is the reply to a refused command.
func ErrorReply(e *protocol.Error) Message {
	return Message{Reply: &Reply{Kind: Failed, Room: e.Room, ID: e.ID, HasID: e.HasID, Code: e.Code, Message: e.Message}}
}

// Limits bound an outbox. All must be positive.
type Limits struct {
	ConflateAfter int // queued messages past which updates are conflated
	MaxMessages   int // hard bound on queued messages
	MaxBytes      int // hard bound on queued bytes
}

// Result says what Push did.
type Result uint8

const (
	Queued     Result = iota // appended
	Conflated                // replaced an older update of the same room
	Overflowed               // the outbox overflowed now or earlier; message dropped
	Closed                   // the outbox was closed; message dropped
)

// Feed supplies messages that must not be pushed all at once (a replay):
// the outbox asks for the next page when its queue runs low, so a backlog
// of any length is paced by the client's reading, never conflated and
// never overflows the queue.
type Feed interface {
	// Next pushes at most max messages into o and reports whether the feed
	// is finished (then it is forgotten). It is called by the taker, with
	// no lock of the outbox held. A feed that has nothing yet returns
	// false and calls o.Wake when it has.
	Next(o *Outbox, max int) (done bool)
}

// Outbox is safe for concurrent use by any number of pushers and one taker.
type Outbox struct {
	limits     Limits
	wake       chan struct{} // capacity 1: an edge trigger, never blocks a pusher
	onOverflow func()
	onPush     func() // if set, called instead of signalling wake (then nil)

	mu       sync.Mutex
	queue    []Message
	bytes    int
	overflow bool
	closed   bool
	feeds    []Feed // asked in order; the first one feeds until it is done
	woken    bool   // Wake was called since the last Take: a feed has something
	changes  uint64 // messages queued plus feeds finished, ever: Refill's measure of progress
}

// New returns an empty outbox. onOverflow, if not nil, is called once, on
// the pushing goroutine and without locks held, when the outbox overflows;
// it must not block.
func New(l Limits, onOverflow func()) *Outbox {
	return &Outbox{limits: l, wake: make(chan struct{}, 1), onOverflow: onOverflow}
}

// NewNotify returns an empty outbox that calls onPush after every push
// (without locks held; it must not block) instead of signalling Ready,
// which is then nil. It saves a channel per connection.
func NewNotify(l Limits, onOverflow, onPush func()) *Outbox {
	return &Outbox{limits: l, onOverflow: onOverflow, onPush: onPush}
}

// Push queues m without ever blocking.
func (o *Outbox) Push(m Message) Result {
	o.mu.Lock()
	r, first := o.pushLocked(m)
	o.mu.Unlock()
	o.pushed(r, first)
	return r
}

// PushPair queues a, then b, under one hold of the lock and wakes the
// writer once: a join's reply and its snapshot then leave in one frame
// and one write, where two pushes could wake a writer that takes the
// reply alone.
func (o *Outbox) PushPair(a, b Message) {
	o.mu.Lock()
	ra, fa := o.pushLocked(a)
	rb, fb := o.pushLocked(b)
	o.mu.Unlock()
	switch {
	case fa || fb:
		o.pushed(Overflowed, true)
	case ra == Queued || ra == Conflated:
		o.pushed(ra, false)
	default:
		o.pushed(rb, false)
	}
}

// pushed wakes the writer after a push, and starts the close of a queue
// that this push overflowed.
func (o *Outbox) pushed(r Result, first bool) {
	switch r {
	case Queued, Conflated:
		o.signal()
	case Overflowed:
		if first {
			o.signal()
			if o.onOverflow != nil {
				o.onOverflow()
			}
		}
	}
}

// pushLocked returns what happened, and whether this push overflowed.
func (o *Outbox) pushLocked(m Message) (Result, bool) {
	switch {
	case o.closed:
		return Closed, false
	case o.overflow:
		return Overflowed, false
	}
	size := m.Size()
	if m.Pub != nil && !m.Replay && (len(o.queue) >= o.limits.ConflateAfter || 2*o.bytes >= o.limits.MaxBytes) {
		room := m.Pub.Room
		for i := len(o.queue) - 1; i >= 0; i-- {
			q := &o.queue[i]
			if q.Room() != room {
				continue
			}
			if q.Pub == nil || q.Replay {
				break // a reply or a replayed update: the new one must stay after it
			}
			qs := q.Size()
			if o.bytes+size-qs > o.limits.MaxBytes {
				break
			}
			o.bytes += size - qs
			q.Pub, q.Snapshot = m.Pub, m.Snapshot // a snapshot replaced by a live update is live
			return Conflated, false
		}
	}
	if len(o.queue) >= o.limits.MaxMessages || o.bytes+size > o.limits.MaxBytes {
		o.overflow = true
		clear(o.queue) // release the frames now, not when the writer gets to it
		o.queue, o.bytes, o.feeds = nil, 0, nil
		return Overflowed, true
	}
	o.queue = append(o.queue, m)
	o.bytes += size
	o.changes++
	return Queued, false
}

func (o *Outbox) signal() {
	if o.onPush != nil {
		o.onPush()
		return
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// AddFeed appends f to the feeds the taker draws from when the queue runs
// low, and wakes the taker.
func (o *Outbox) AddFeed(f Feed) {
	o.mu.Lock()
	if o.closed || o.overflow {
		o.mu.Unlock()
		return
	}
	o.feeds = append(o.feeds, f)
	o.woken = true // news for a taker about to stop, as a Wake is
	o.mu.Unlock()
	o.signal()
}

// Wake signals the taker as a push would, without a message: a feed that
// waited for something has it now. Until the next Take, Busy reports it,
// so a taker about to stop cannot miss it.
func (o *Outbox) Wake() {
	o.mu.Lock()
	o.woken = true
	o.mu.Unlock()
	o.signal()
}

// Busy reports whether the taker has work: queued messages, or a feed
// woken since the last Take. A taker that stops when its Take came back
// empty checks Busy after it has let pushers start another taker, so that
// a push or a wake in between is not lost.
func (o *Outbox) Busy() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.queue) > 0 || o.woken
}

// page is how many messages a feed may add at once: half the conflation
// threshold, so that a page never pushes the queue into conflation.
func (o *Outbox) page() int { return max(1, o.limits.ConflateAfter/2) }

// refill asks the feeds for messages while the queue is low: fewer than a
// page of messages and under a quarter of MaxBytes, so that a page of the
// largest updates still fits.
func (o *Outbox) refill() {
	for {
		o.mu.Lock()
		if len(o.feeds) == 0 || o.closed || o.overflow || len(o.queue) >= o.page() || 4*o.bytes >= o.limits.MaxBytes {
			o.mu.Unlock()
			return
		}
		f := o.feeds[0]
		o.mu.Unlock()
		if !f.Next(o, o.page()) {
			return
		}
		o.mu.Lock()
		if len(o.feeds) > 0 && o.feeds[0] == f {
			o.feeds[0] = nil
			o.feeds = o.feeds[1:]
			o.changes++
		}
		o.mu.Unlock()
	}
}

// Ready is signalled after pushes; the taker then calls Take. A signal may
// find the queue already empty.
func (o *Outbox) Ready() <-chan struct{} { return o.wake }

// Take moves every queued message into dst (which it returns) and reports
// whether the outbox has overflowed. Passing the previous batch back, with
// its elements cleared, lets two slices alternate without allocating.
func (o *Outbox) Take(dst []Message) (batch []Message, overflowed bool) {
	o.mu.Lock()
	o.woken = false // what woke a feed is looked at now, by refill
	o.mu.Unlock()
	o.refill()
	o.mu.Lock()
	batch = o.queue
	o.queue, o.bytes = dst[:0], 0
	// A burst can grow a slice far beyond the usual need; don't keep it
	// for the connection's lifetime.
	if cap(o.queue) > 2*o.limits.ConflateAfter {
		o.queue = nil
	}
	more := len(batch) > 0 && len(o.feeds) > 0
	overflowed = o.overflow
	o.mu.Unlock()
	if more {
		// A feed has more: come back for it, also a taker that waits for
		// Ready between takes. (A feed that is waiting has added nothing,
		// so this cannot spin.)
		o.signal()
	}
	return batch, overflowed
}

// Close drops what is queued and refuses further pushes.
func (o *Outbox) Close() {
	o.mu.Lock()
	o.closed = true
	clear(o.queue)
	o.queue, o.bytes, o.feeds = nil, 0, nil
	o.mu.Unlock()
	o.signal()
}

// Len returns the number of queued messages and their size in bytes.
func (o *Outbox) Len() (messages, bytes int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.queue), o.bytes
}

// The three methods below split Take for a taker that must never wait (an
// event-loop writer serving many clients): a feed's Next may read from
// the stream, so the loop hands refilling to a short-lived goroutine and
// takes only what is queued.

// NeedsRefill reports whether a feed should be asked for more now: the
// condition under which Take would call it.
func (o *Outbox) NeedsRefill() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.feeds) > 0 && !o.closed && !o.overflow && len(o.queue) < o.page() && 4*o.bytes < o.limits.MaxBytes
}

// Refill asks the feeds for messages as Take does, and reports whether
// that changed anything (messages queued, or a feed finished). One
// caller at a time, never at the same time as Take.
func (o *Outbox) Refill() (progress bool) {
	o.mu.Lock()
	o.woken = false
	before := o.changes
	o.mu.Unlock()
	o.refill()
	o.mu.Lock()
	// Counted, not compared by length: the taker may have taken what
	// was queued meanwhile.
	progress = o.changes != before
	o.mu.Unlock()
	return progress
}

// TakeQueued is Take without asking the feeds: it moves what is queued
// into dst and never calls out of the package.
func (o *Outbox) TakeQueued(dst []Message) (batch []Message, overflowed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.woken = false
	batch = o.queue
	o.queue, o.bytes = dst[:0], 0
	if cap(o.queue) > 2*o.limits.ConflateAfter {
		o.queue = nil
	}
	return batch, o.overflow
}
