package broker

import (
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Delivery is one message received for a room.
type Delivery struct {
	// Payload is the producer's payload as published, not yet validated.
	Payload []byte
	// Seq and Prev are the stream sequence of this update and of the
	// room's previous one; both 0 without history.
	Seq, Prev uint64
	// Time is when the stream stored it (zero without history): the same
	// on every gateway, so history windows agree.
	Time time.Time
}

// Subscription is a room subscription; Unsubscribe ends it.
type Subscription interface {
	Unsubscribe() error
}

// Rooms maps rooms to subjects and subscribes to them: to <prefix>.<room>
// without history, to the stream's republished <live>.<room> with it.
type Rooms struct {
	nc     *nats.Conn
	prefix string
	live   string // "" without history
}

// Per-subscription buffer between the NATS reader and the room's delivery
// goroutine. Past it nats.go drops messages and reports a slow consumer
// (logged by Connect's error handler); fan-out is non-blocking, so only a
// starved process gets there.
const (
	pendingMsgs  = 65536
	pendingBytes = 64 << 20
)

// NewRooms returns the room mapping for subjects under prefix. With a
// live prefix (history on) rooms are followed on the stream's republished
// subjects, whose headers carry the sequence numbers.
func NewRooms(nc *nats.Conn, prefix, live string) (*Rooms, error) {
	if err := protocol.CheckSubjectPrefix(prefix); err != nil {
		return nil, err
	}
	if live != "" {
		if err := protocol.CheckSubjectPrefix(live); err != nil {
			return nil, err
		}
	}
	return &Rooms{nc: nc, prefix: prefix, live: live}, nil
}

// Subject returns the subject of a room.
func (r *Rooms) Subject(room string) (string, error) {
	if err := protocol.CheckRoom(room); err != nil {
		return "", fmt.Errorf("room %q: %w", room, err)
	}
	return r.prefix + "." + room, nil
}

// Subscribe subscribes to the room's subject. deliver is called from one
// goroutine per subscription, in subject order, and must not block.
func (r *Rooms) Subscribe(room string, deliver func(Delivery)) (Subscription, error) {
	subject, err := r.Subject(room)
	if err != nil {
		return nil, err
	}
	handler := func(m *nats.Msg) { deliver(Delivery{Payload: m.Data}) }
	if r.live != "" {
		subject = r.live + "." + room
		handler = func(m *nats.Msg) {
			seq, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
			prev, _ := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64)
			ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
			deliver(Delivery{Payload: m.Data, Seq: seq, Prev: prev, Time: ts})
		}
	}
	sub, err := r.nc.Subscribe(subject, handler)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub, nil
}
