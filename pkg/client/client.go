// Package client is the transport-neutral core of one client connection:
// what the client may do (its grant and when it expires), which rooms it
// is in, its command and resume budgets, and its joins, leaves and
// teardown against the hub. Replies and updates reach the client's outbox
// as typed values (outbox.Reply, outbox.Publication); each transport
// (/ws, Socket.IO, SSE) parses its wire format into protocol.Commands for
// the core and encodes what the outbox holds into its own frames. A rule
// about joining is written here once, for every transport.
//
// Concurrency: Command, Spend and Refuse are called by the one goroutine
// that reads the client at a time; Close (teardown) may be called from any
// goroutine, also while a join is in progress: it waits for the join and
// then leaves its room, so no room is left joined by a client that is
// gone.
package client

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/roomcast/roomcast/pkg/hub"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
	"github.com/roomcast/roomcast/pkg/ratelimit"
)

// Grant says which rooms a client may join (*auth.Grant is one); a nil
// Grant allows every room. A Grant that is also Expiring ends.
type Grant interface {
	Allows(room string) bool
}

// Expiring is a Grant that ends (a token's).
type Expiring interface {
	// ExpiresIn is the time left before the grant ends; ok is false when
	// it never does.
	ExpiresIn(now time.Time) (d time.Duration, ok bool)
}

// Options are the per-client limits. See config.yaml for each.
type Options struct {
	MaxRooms     int     // rooms one client may be in
	CommandRate  float64 // sustained commands per second
	CommandBurst int     // commands allowed at once; refused more than this many times in a row is a flood
	// History tells whether the gateway can serve since and history; without
	// it such a join is refused with history_unavailable.
	History bool
}

// Result says what became of a command, and what the transport must do.
type Result uint8

const (
	// Done: the command ran, or was refused with an error reply queued;
	// go on.
	Done Result = iota
	// Unavailable: the hub could not subscribe (NATS is unreachable): the
	// transport closes the connection so that the client goes to another
	// replica (1013 on WebSockets).
	Unavailable
)

// Spent says what taking one command from the budget gave.
type Spent uint8

const (
	Allowed Spent = iota // go on with the command
	Limited              // refused: answer rate_limited and go on
	Flooded              // refused more than CommandBurst times in a row: close the connection (1008)
)

// Rules are what every client of a gateway is held to: the hub it joins
// rooms of, the per-client limits, the metrics it counts in. Transports
// make their clients with New and need nothing else of the hub.
type Rules struct {
	hub     *hub.Hub
	opts    Options
	metrics *metrics.Metrics
}

// NewRules returns the rules of clients of hub h.
func NewRules(h *hub.Hub, opts Options, m *metrics.Metrics) *Rules {
	return &Rules{hub: h, opts: opts, metrics: m}
}

// New makes the core of a client whose queue is box. onExpire, if not nil,
// is called (on a timer's goroutine) when a grant given to SetGrant or
// ExpireWith ends: the transport closes the connection its way (4001 on
// WebSockets), so that the client fetches a new token and comes back.
func (r *Rules) New(box *outbox.Outbox, onExpire func()) *Client {
	return New(r.hub, box, r.opts, r.metrics, onExpire)
}

// Client is one client connection's core. Its outbox is the transport's
// queue of what to send.
type Client struct {
	hub     *hub.Hub
	box     *outbox.Outbox
	opts    Options
	metrics *metrics.Metrics

	// Owned by the client's reader (one at a time).
	bucket   ratelimit.Bucket
	rejected int // commands refused in a row by the budget
	resumes  *hub.Budget

	mu        sync.Mutex // guards the fields below; held across hub.Join
	grant     Grant
	rooms     []string // a few at most (Options.MaxRooms)
	gone      bool     // torn down: no more joins
	expiry    *time.Timer
	expiresAt time.Time
	onExpire  func()
}

// New makes the core of a client whose queue is box. onExpire, if not nil,
// is called (on a timer's goroutine) when a grant given to SetGrant or
// ExpireWith ends: the transport closes the connection its way (4001 on
// WebSockets), so that the client fetches a new token and comes back.
func New(h *hub.Hub, box *outbox.Outbox, opts Options, m *metrics.Metrics, onExpire func()) *Client {
	return &Client{
		hub: h, box: box, opts: opts, metrics: m, onExpire: onExpire,
		bucket:  ratelimit.New(opts.CommandRate, opts.CommandBurst, time.Now()),
		resumes: h.NewBudget(),
	}
}

// Box is the client's outbox.
func (c *Client) Box() *outbox.Outbox { return c.box }

// SetGrant sets which rooms the client may join (nil: every room) and
// arms its expiry, keeping the earliest of every grant given.
func (c *Client) SetGrant(g Grant) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.grant = g
	c.expireLocked(g)
}

// ExpireWith arms the expiry of a grant that does not decide rooms (a
// Socket.IO namespace other than the main one).
func (c *Client) ExpireWith(g Grant) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(g)
}

func (c *Client) expireLocked(g Grant) {
	eg, ok := g.(Expiring)
	if !ok || c.gone || c.onExpire == nil {
		return
	}
	now := time.Now()
	d, ok := eg.ExpiresIn(now)
	if !ok {
		return
	}
	at := now.Add(d)
	if c.expiry != nil {
		if !at.Before(c.expiresAt) {
			return // an earlier expiry is armed (or has fired)
		}
		if !c.expiry.Stop() {
			return // it has fired already
		}
	}
	c.expiresAt = at
	c.expiry = time.AfterFunc(max(d, 0), func() {
		c.metrics.TokensExpired.Inc()
		c.onExpire()
	})
}

// Spend takes one command from the client's budget. Every command costs
// one, parsed or not, and so does anything else that costs the gateway a
// write or a check (a WebSocket ping, a Socket.IO CONNECT).
func (c *Client) Spend(now time.Time) Spent {
	if c.bucket.Take(now) {
		c.rejected = 0
		return Allowed
	}
	c.rejected++
	if c.rejected > c.opts.CommandBurst {
		return Flooded
	}
	return Limited
}

// RateLimited is the refusal of a command over budget, naming the
// command's room and id when it had them, so that the client can tell
// which one to retry.
func RateLimited(room string, id int64, hasID bool) *protocol.Error {
	return &protocol.Error{Code: protocol.CodeRateLimited, Message: "too many commands; slow down", Room: room, ID: id, HasID: hasID}
}

// Refuse queues the error reply e and counts it.
func (c *Client) Refuse(e *protocol.Error) {
	c.metrics.ClientErrors.WithLabelValues(e.Code).Inc()
	c.box.Push(outbox.ErrorReply(e))
}

// Command runs a join or a leave. A refused join is answered with an
// error reply, as the protocol says; only a hub that cannot reach NATS is
// the transport's business (Unavailable).
func (c *Client) Command(cmd protocol.Command) Result {
	if cmd.Op == protocol.OpLeave {
		c.leave(cmd)
		return Done
	}
	return c.join(cmd)
}

func (c *Client) join(cmd protocol.Command) Result {
	fail := func(code, msg string) Result {
		c.Refuse(&protocol.Error{Code: code, Message: msg, Room: cmd.Room, ID: cmd.ID, HasID: cmd.HasID})
		return Done
	}
	// Held across hub.Join so that a teardown cannot miss a room being
	// joined: it waits, then leaves it.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return Done
	}
	if c.grant != nil && !c.grant.Allows(cmd.Room) {
		return fail(protocol.CodeForbidden, "your token does not grant this room")
	}
	if (cmd.HasSince || cmd.HistoryCount > 0 || cmd.HistoryAge > 0) && !c.opts.History {
		return fail(protocol.CodeHistoryUnavailable, "this gateway runs without history; join without since or history")
	}
	in := slices.Contains(c.rooms, cmd.Room)
	if !in && len(c.rooms) >= c.opts.MaxRooms {
		return fail(protocol.CodeTooManyRooms, "a connection may join at most "+strconv.Itoa(c.opts.MaxRooms)+" rooms")
	}
	req := hub.JoinRequest{Room: cmd.Room, ID: cmd.ID, HasID: cmd.HasID, Since: cmd.Since, HasSince: cmd.HasSince,
		HistoryCount: cmd.HistoryCount, HistoryAge: cmd.HistoryAge, Budget: c.resumes}
	switch err := c.hub.Join(c.box, req); {
	case errors.Is(err, hub.ErrRateLimited):
		return fail(protocol.CodeRateLimited, "too many resumes (joins with since); join without since or slow down")
	case errors.Is(err, hub.ErrHistoryUnavailable):
		return fail(protocol.CodeHistoryUnavailable, "history did not answer in time; join without since")
	case err != nil:
		// Only a closed NATS connection fails a subscribe: this replica
		// cannot serve.
		return Unavailable
	}
	if !in {
		c.rooms = append(c.rooms, cmd.Room)
	}
	return Done
}

func (c *Client) leave(cmd protocol.Command) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return
	}
	c.hub.Leave(c.box, cmd.Room, cmd.ID, cmd.HasID)
	if i := slices.Index(c.rooms, cmd.Room); i >= 0 {
		c.rooms = slices.Delete(c.rooms, i, i+1)
	}
}

// LeaveAll leaves every room without replies; the client may join again
// (a Socket.IO client that disconnects its main namespace and connects it
// again).
func (c *Client) LeaveAll() {
	c.mu.Lock()
	rooms := c.rooms
	c.rooms = nil
	c.mu.Unlock()
	c.hub.LeaveAll(c.box, rooms)
}

// Rooms is how many rooms the client is in.
func (c *Client) Rooms() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.rooms)
}

// Close tears the client down, once: no more joins (a join in progress is
// waited for), out of every room, the expiry stopped, the queue freed.
func (c *Client) Close() {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return
	}
	c.gone = true
	rooms := c.rooms
	c.rooms = nil
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()
	c.hub.LeaveAll(c.box, rooms)
	c.box.Close()
}
