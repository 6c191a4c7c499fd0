// Package hub keeps the gateway's rooms: which local clients are in each
// room, the one NATS subscription each room with local clients holds, and
// the fan-out of every update from that subscription to the clients.
//
// Interest follows clients: a room's subscription is taken on its first
// local join and dropped when its last local client leaves or disconnects.
// Each update is validated and encoded once; the same bytes are queued to
// every client's outbox, which never blocks (see package outbox for what
// happens to a client that falls behind).
//
// Lock order: Hub.mu, then room.mu, then the outbox's own lock. Hub.mu is
// held across Subscribe and Unsubscribe so that the subscription state of
// a room changes in one place at a time; nats.go's Subscribe and
// Unsubscribe only queue a protocol line, so this never waits on the
// network. The fan-out path takes room.mu only.
package hub

import (
	"bytes"
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

// Member is one client's queue. Its identity is the client's identity.
type Member = *outbox.Outbox

// Options tune a hub.
type Options struct {
	// MaxUpdateBytes is the largest producer payload forwarded; larger
	// ones are dropped and counted.
	MaxUpdateBytes int
}

// Hub is safe for concurrent use.
type Hub struct {
	src     Source
	opts    Options
	log     *slog.Logger
	metrics *metrics.Metrics

	mu    sync.Mutex
	rooms map[string]*room

	dropLog rateLimitedLog
}

type room struct {
	name string
	sub  broker.Subscription // owned by Hub.mu

	mu      sync.Mutex
	members []Member       // dense for a fast fan-out loop
	index   map[Member]int // position in members
	last    []byte         // latest update frame: the snapshot for a joiner

	scratch bytes.Buffer // used only by the subscription's delivery goroutine
}

// New returns an empty hub that subscribes through src. It registers the
// rooms gauge on reg.
func New(src Source, opts Options, m *metrics.Metrics, reg prometheus.Registerer, log *slog.Logger) *Hub {
	h := &Hub{src: src, opts: opts, log: log, metrics: m, rooms: make(map[string]*room)}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roomcast_rooms",
		Help: "Rooms with local clients; each holds exactly one NATS subscription.",
	}, func() float64 { return float64(h.Rooms()) }))
	return h
}

// ErrSubscribe wraps a failure to subscribe a room in NATS.
var ErrSubscribe = errors.New("hub: subscribe failed")

// Join adds m to the room, taking the room's subscription if m is its
// first local client. It queues the joined reply and then the room's latest
// update, if this gateway has one, so that the client sees: joined,
// snapshot, live updates. Joining a room m is already in only repeats the
// reply. On error m is not in the room and no reply was queued.
func (h *Hub) Join(m Member, name string, id int64, hasID bool) error {
	if !protocol.ValidRoom(name) {
		return fmt.Errorf("hub: invalid room %q", name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[name]
	if r == nil {
		r = &room{name: name, index: make(map[Member]int)}
		sub, err := h.src.Subscribe(name, func(d broker.Delivery) { h.deliver(r, d) })
		if err != nil {
			return fmt.Errorf("%w: room %s: %v", ErrSubscribe, name, err)
		}
		r.sub = sub
		h.rooms[name] = r
		h.log.Debug("room subscribed", "room", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, already := r.index[m]
	m.Push(outbox.Message{Frame: protocol.AppendJoined(nil, name, id, hasID), Room: name})
	if already {
		return nil
	}
	r.index[m] = len(r.members)
	r.members = append(r.members, m)
	if r.last != nil {
		m.Push(outbox.Message{Frame: r.last, Room: name, Update: true})
	}
	return nil
}

// Leave removes m from the room and queues the left reply; no update of the
// room is queued for m after it. The last client out drops the room's
// subscription. Leaving a room m is not in only queues the reply.
func (h *Hub) Leave(m Member, name string, id int64, hasID bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	left := protocol.AppendLeft(nil, name, id, hasID)
	r := h.rooms[name]
	if r == nil {
		m.Push(outbox.Message{Frame: left, Room: name})
		return
	}
	r.mu.Lock()
	r.removeLocked(m)
	m.Push(outbox.Message{Frame: left, Room: name})
	empty := len(r.members) == 0
	r.mu.Unlock()
	if empty {
		h.dropLocked(r)
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
		r.removeLocked(m)
		empty := len(r.members) == 0
		r.mu.Unlock()
		if empty {
			h.dropLocked(r)
		}
	}
}

func (r *room) removeLocked(m Member) {
	i, ok := r.index[m]
	if !ok {
		return
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
}

// dropLocked unsubscribes an empty room. h.mu must be held.
func (h *Hub) dropLocked(r *room) {
	delete(h.rooms, r.name)
	if err := r.sub.Unsubscribe(); err != nil {
		// The connection is closed or draining: the server drops the
		// interest with the connection, so there is nothing to leak.
		h.log.Debug("room unsubscribe", "room", r.name, "err", err)
	}
	h.log.Debug("room unsubscribed", "room", r.name)
}

// deliver runs on the room subscription's delivery goroutine: validate and
// encode once, then queue the same bytes to every member.
func (h *Hub) deliver(r *room, d broker.Delivery) {
	h.metrics.UpdatesReceived.Inc()
	r.scratch.Reset()
	err := errTooLarge
	if len(d.Payload) <= h.opts.MaxUpdateBytes {
		err = protocol.CompactPayload(&r.scratch, d.Payload)
	}
	if err != nil {
		h.metrics.UpdatesDropped.WithLabelValues(dropReason(err)).Inc()
		if n := h.dropLog.allow(time.Now()); n > 0 {
			h.log.Warn("dropped producer payload", "room", r.name, "reason", err, "bytes", len(d.Payload), "dropped_since_last_log", n)
		}
		return
	}
	frame := protocol.AppendUpdate(make([]byte, 0, r.scratch.Len()+len(r.name)+64),
		protocol.Update{Room: r.name, Data: r.scratch.Bytes()})
	msg := outbox.Message{Frame: frame, Room: r.name, Update: true}

	conflated := 0
	r.mu.Lock()
	r.last = frame
	for _, m := range r.members {
		if m.Push(msg) == outbox.Conflated {
			conflated++
		}
	}
	n := len(r.members)
	r.mu.Unlock()

	h.metrics.Deliveries.Add(float64(n))
	if conflated > 0 {
		h.metrics.Conflated.Add(float64(conflated))
	}
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

// Rooms returns the number of rooms with local clients, which is the number
// of room subscriptions this gateway holds.
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
