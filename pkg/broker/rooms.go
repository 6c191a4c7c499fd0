package broker

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Delivery is one message received for a room.
type Delivery struct {
	// Payload is the producer's payload as published, not yet validated.
	Payload []byte
}

// Subscription is a room subscription; Unsubscribe ends it.
type Subscription interface {
	Unsubscribe() error
}

// Rooms maps rooms to subjects (<prefix>.<room>) and subscribes to them.
type Rooms struct {
	nc     *nats.Conn
	prefix string
}

// Per-subscription buffer between the NATS reader and the room's delivery
// goroutine. Past it nats.go drops messages and reports a slow consumer
// (logged by Connect's error handler); fan-out is non-blocking, so only a
// starved process gets there.
const (
	pendingMsgs  = 65536
	pendingBytes = 64 << 20
)

// NewRooms returns the room mapping for subjects under prefix.
func NewRooms(nc *nats.Conn, prefix string) (*Rooms, error) {
	if err := protocol.CheckSubjectPrefix(prefix); err != nil {
		return nil, err
	}
	return &Rooms{nc: nc, prefix: prefix}, nil
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
	sub, err := r.nc.Subscribe(subject, func(m *nats.Msg) {
		deliver(Delivery{Payload: m.Data})
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub, nil
}
