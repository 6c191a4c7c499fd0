package socketio

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/roomcast/roomcast/pkg/engineio"
	"github.com/roomcast/roomcast/pkg/hub"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// session is the Socket.IO side of one Engine.IO session.
type session struct {
	srv  *Server
	conn *engineio.Conn
	box  *outbox.Outbox

	// Owned by the goroutine carrying the current packet (engineio
	// serialises Message and Closed).
	nsps      map[string]Grant // connected namespaces
	rooms     map[string]struct{}
	limiter   *rate.Limiter
	rejected  int      // events refused in a row by the rate limit
	partial   *packet  // a binary packet waiting for its attachments
	attached  [][]byte // the attachments received so far
	timer     *time.Timer
	expiry    *time.Timer // the earliest expiring grant of a connected namespace
	expiresAt time.Time

	connected atomic.Bool // some namespace was connected: the connect timeout is off

	mu      sync.Mutex // shared with the writer's Take
	main    bool       // the main namespace is connected: updates are sent
	nextID  int64
	pending map[int64]int64 // hub reply id → the client's ack id
	resumes *hub.Budget
}

func (s *Server) open(c *engineio.Conn) engineio.Handler {
	ss := &session{
		srv:     s,
		conn:    c,
		nsps:    make(map[string]Grant),
		rooms:   make(map[string]struct{}),
		limiter: rate.NewLimiter(rate.Limit(s.cfg.CommandRate), s.cfg.CommandBurst),
		pending: make(map[int64]int64),
		resumes: s.hub.NewBudget(),
	}
	// The outbox wakes the session's writer itself (Conn.Wake), so an idle
	// WebSocket needs no goroutine waiting on a Ready channel.
	ss.box = outbox.NewNotify(s.cfg.Outbox, func() {
		s.metrics.SlowDisconnects.Inc()
		c.Close(4008, "client too slow")
	}, c.Wake)
	ss.timer = time.AfterFunc(s.cfg.ConnectTimeout, func() {
		if !ss.connected.Load() {
			c.Close(1000, "no namespace connected in time")
		}
	})
	s.metrics.ConnectionsAccepted.Inc()
	s.metrics.Connections.Inc()
	return ss
}

// expiringGrant is a Grant that ends (an auth.Grant from a JWT).
type expiringGrant interface {
	ExpiresIn(now time.Time) (time.Duration, bool)
}

// expireWith closes the Engine.IO session, with 4001 on a WebSocket, when
// grant expires, as /ws does: the client reconnects on its own and
// CONNECTs again, and its auth option (a function) can fetch a new token.
func (ss *session) expireWith(grant Grant) {
	eg, ok := grant.(expiringGrant)
	if !ok {
		return
	}
	d, ok := eg.ExpiresIn(time.Now())
	if !ok {
		return
	}
	if ss.expiry != nil && !ss.expiry.Stop() {
		return // an earlier expiry has fired already
	}
	if ss.expiry != nil {
		// Keep the earlier of the two.
		d = min(d, time.Until(ss.expiresAt))
	}
	ss.expiresAt = time.Now().Add(d)
	ss.expiry = time.AfterFunc(max(d, 0), func() {
		ss.srv.metrics.TokensExpired.Inc()
		ss.conn.Close(protocol.CloseTokenExpired, "token expired")
	})
}

// Closed leaves every room; updates still queued are dropped.
func (ss *session) Closed(reason string) {
	ss.timer.Stop()
	if ss.expiry != nil {
		ss.expiry.Stop()
	}
	ss.leaveAll()
	ss.box.Close()
	ss.srv.metrics.Connections.Dec()
	code, byClient := ss.conn.CloseStatus()
	ss.srv.metrics.Disconnected(code, byClient)
	ss.srv.log.Debug("socket.io session closed", "sid", ss.conn.ID(), "reason", reason, "code", code, "by_client", byClient)
}

func (ss *session) leaveAll() {
	rooms := make([]string, 0, len(ss.rooms))
	for r := range ss.rooms {
		rooms = append(rooms, r)
	}
	ss.srv.hub.LeaveAll(ss.box, rooms)
	clear(ss.rooms)
}

// Message handles one Engine.IO message: a packet, or an attachment of a
// binary packet.
func (ss *session) Message(data []byte, binary bool) error {
	if binary {
		if ss.partial == nil {
			return errMalformed
		}
		ss.attached = append(ss.attached, append([]byte(nil), data...))
		if len(ss.attached) < ss.partial.Attachments {
			return nil
		}
		p, att := *ss.partial, ss.attached
		ss.partial, ss.attached = nil, nil
		return ss.dispatch(p, att)
	}
	if ss.partial != nil {
		return errMalformed // attachments must come first
	}
	p, err := decode(data)
	if err != nil {
		return err
	}
	if p.Attachments > 0 {
		p.Data = append([]byte(nil), p.Data...)
		ss.partial = &p
		return nil
	}
	return ss.dispatch(p, nil)
}

func (ss *session) dispatch(p packet, att [][]byte) error {
	switch p.Type {
	case typeConnect:
		ss.connect(p)
	case typeDisconnect:
		ss.disconnect(p.Nsp)
	case typeEvent, typeBinaryEvent:
		if _, ok := ss.nsps[p.Nsp]; ok {
			ss.event(p, att)
		}
	case typeAck, typeBinaryAck:
		// The gateway never asks the client for an acknowledgement.
	}
	return nil
}

func (ss *session) knownNamespace(nsp string) bool {
	return nsp == "/" || ss.srv.cfg.Conformance && nsp == "/custom"
}

func (ss *session) connect(p packet) {
	// CONNECTs share the event budget: each may cost a token check, and
	// one POST can carry a thousand.
	if !ss.allow() {
		ss.srv.metrics.ClientErrors.WithLabelValues(protocol.CodeRateLimited).Inc()
		ss.send(appendHeader(nil, typeConnectError, 0, p.Nsp, 0, false), []byte(`{"message":"too many packets; slow down","data":{"code":"rate_limited"}}`))
		return
	}
	if !ss.knownNamespace(p.Nsp) {
		ss.send(appendHeader(nil, typeConnectError, 0, p.Nsp, 0, false), []byte(`{"message":"Invalid namespace"}`))
		return
	}
	auth := json.RawMessage(p.Data)
	var grant Grant
	if a := ss.srv.cfg.Authorize; a != nil {
		var err error
		if grant, err = a(ss.conn.Request(), auth); err != nil {
			ss.srv.metrics.ClientErrors.WithLabelValues(protocol.CodeUnauthorized).Inc()
			msg, _ := json.Marshal(struct {
				Message string `json:"message"`
				Data    any    `json:"data"`
			}{err.Error(), map[string]string{"code": protocol.CodeUnauthorized}})
			ss.send(appendHeader(nil, typeConnectError, 0, p.Nsp, 0, false), msg)
			return
		}
		if pr, ok := ss.conn.Slot().(Promoter); ok {
			if err := pr.Promote(); err != nil {
				msg, _ := json.Marshal(struct {
					Message string `json:"message"`
					Data    any    `json:"data"`
				}{err.Error(), map[string]string{"code": "unavailable"}})
				// Still pending: connect_timeout closes it unless a
				// retried CONNECT finds room.
				ss.send(appendHeader(nil, typeConnectError, 0, p.Nsp, 0, false), msg)
				return
			}
		}
	}
	ss.nsps[p.Nsp] = grant
	ss.connected.Store(true)
	ss.expireWith(grant)
	if p.Nsp == "/" {
		ss.mu.Lock()
		ss.main = true
		ss.mu.Unlock()
	}
	sid, _ := json.Marshal(struct {
		SID string `json:"sid"`
	}{newID()})
	ss.send(appendHeader(nil, typeConnect, 0, p.Nsp, 0, false), sid)
	if ss.srv.cfg.Conformance {
		if len(auth) == 0 {
			auth = json.RawMessage(`{}`)
		}
		ss.send(appendHeader(nil, typeEvent, 0, p.Nsp, 0, false), appendArray(nil, json.RawMessage(`"auth"`), auth))
	}
}

func (ss *session) disconnect(nsp string) {
	delete(ss.nsps, nsp)
	if nsp != "/" {
		return
	}
	ss.leaveAll()
	ss.mu.Lock()
	ss.main = false
	clear(ss.pending)
	ss.mu.Unlock()
}

// send queues one packet: its header, then the JSON payload.
func (ss *session) send(header, payload []byte, att ...[]byte) {
	data := make([]byte, 0, len(header)+len(payload))
	data = append(append(data, header...), payload...)
	packets := make([]engineio.Packet, 0, 1+len(att))
	packets = append(packets, engineio.Packet{Type: engineio.Message, Data: data})
	for _, a := range att {
		packets = append(packets, engineio.Packet{Type: engineio.Message, Data: a, Binary: true})
	}
	ss.conn.Send(packets...)
}

// ack answers the client's acknowledgement request id with args.
func (ss *session) ack(nsp string, id int64, att [][]byte, args ...json.RawMessage) {
	typ := typeAck
	if len(att) > 0 {
		typ = typeBinaryAck
	}
	ss.send(appendHeader(nil, typ, len(att), nsp, id, true), appendArray(nil, args...), att...)
}

func (ss *session) event(p packet, att [][]byte) {
	name, args := eventArgs(p.Data)
	if !ss.allow() {
		ss.fail(p, protocol.CodeRateLimited, "too many events; slow down", "")
		return
	}
	switch {
	case name == "join" && p.Nsp == "/":
		ss.join(p, args)
	case name == "leave" && p.Nsp == "/":
		ss.leave(p, args)
	case ss.srv.cfg.Conformance && name == "message":
		ss.send(appendHeader(nil, p.Type, len(att), p.Nsp, 0, false), appendArray(nil, append([]json.RawMessage{json.RawMessage(`"message-back"`)}, args...)...), att...)
	case ss.srv.cfg.Conformance && name == "message-with-ack":
		if p.HasID {
			ss.ack(p.Nsp, p.ID, att, args...)
		}
	default:
		if p.HasID {
			ss.fail(p, protocol.CodeBadOp, "unknown event; expected join or leave", "")
		}
	}
}

// allow takes one from the session's command budget (events and
// CONNECTs). Refused more than command_burst times in a row, the session
// is closed with 1008.
func (ss *session) allow() bool {
	if ss.limiter.Allow() {
		ss.rejected = 0
		return true
	}
	ss.rejected++
	if ss.rejected > ss.srv.cfg.CommandBurst {
		ss.conn.Close(1008, "event flood")
	}
	return false
}

// roomArg reads the room of join and leave: {room: "sales", since: 41}, or
// "sales".
func roomArg(args []json.RawMessage) (room string, since uint64, hasSince bool, e *protocol.Error) {
	if len(args) == 0 {
		return "", 0, false, &protocol.Error{Code: protocol.CodeBadRoom, Message: `"room" is missing`}
	}
	if json.Unmarshal(args[0], &room) != nil {
		var obj struct {
			Room  *string `json:"room"`
			Since *uint64 `json:"since"`
		}
		if err := json.Unmarshal(args[0], &obj); err != nil {
			return "", 0, false, &protocol.Error{Code: protocol.CodeBadJSON, Message: "expected {room: <name>} or a room name"}
		}
		if obj.Room == nil {
			return "", 0, false, &protocol.Error{Code: protocol.CodeBadRoom, Message: `"room" is missing`}
		}
		room = *obj.Room
		if obj.Since != nil {
			since, hasSince = *obj.Since, true
		}
	}
	if err := protocol.CheckRoom(room); err != nil {
		return room, 0, false, &protocol.Error{Code: protocol.CodeBadRoom, Message: err.Error()}
	}
	return room, since, hasSince, nil
}

func (ss *session) join(p packet, args []json.RawMessage) {
	room, since, hasSince, e := roomArg(args)
	switch {
	case e != nil:
		ss.fail(p, e.Code, e.Message, room)
		return
	case ss.nsps["/"] != nil && !ss.nsps["/"].Allows(room):
		ss.fail(p, protocol.CodeForbidden, "not allowed to join this room", room)
		return
	case hasSince && !ss.srv.cfg.History:
		ss.fail(p, protocol.CodeHistoryUnavailable, "this gateway runs without history; join without since", room)
		return
	}
	if _, in := ss.rooms[room]; !in && len(ss.rooms) >= ss.srv.cfg.MaxRooms {
		ss.fail(p, protocol.CodeTooManyRooms, "a connection may join at most "+strconv.Itoa(ss.srv.cfg.MaxRooms)+" rooms", room)
		return
	}
	id := ss.expect(p)
	req := hub.JoinRequest{Room: room, ID: id, HasID: true, Since: since, HasSince: hasSince, Budget: ss.resumes}
	switch err := ss.srv.hub.Join(ss.box, req); {
	case errors.Is(err, hub.ErrRateLimited):
		ss.forget(id)
		ss.fail(p, protocol.CodeRateLimited, "too many resumes (joins with since); join without since or slow down", room)
		return
	case errors.Is(err, hub.ErrHistoryUnavailable):
		ss.forget(id)
		ss.fail(p, protocol.CodeHistoryUnavailable, "history did not answer in time; join without since", room)
		return
	case err != nil:
		// Only a closed NATS connection fails a subscribe: send the
		// client to another replica.
		ss.srv.log.Warn("join failed", "room", room, "err", err)
		ss.conn.Close(1013, "gateway cannot reach NATS")
		return
	}
	ss.rooms[room] = struct{}{}
}

func (ss *session) leave(p packet, args []json.RawMessage) {
	room, _, _, e := roomArg(args)
	if e != nil {
		ss.fail(p, e.Code, e.Message, room)
		return
	}
	ss.srv.hub.Leave(ss.box, room, ss.expect(p), true)
	delete(ss.rooms, room)
}

// expect returns the id to give the hub for a join or leave; the hub's
// reply with it becomes the ack of p, if p asked for one.
func (ss *session) expect(p packet) int64 {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.nextID++
	if p.HasID {
		ss.pending[ss.nextID] = p.ID
	}
	return ss.nextID
}

// forget drops the ack expected for a hub reply that will not come.
func (ss *session) forget(id int64) {
	ss.mu.Lock()
	delete(ss.pending, id)
	ss.mu.Unlock()
}

// fail refuses an event: the error event, and the ack when asked for.
func (ss *session) fail(p packet, code, message, room string) {
	ss.srv.metrics.ClientErrors.WithLabelValues(code).Inc()
	ev, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Room    string `json:"room,omitempty"`
	}{code, message, room})
	ss.send(appendHeader(nil, typeEvent, 0, p.Nsp, 0, false), appendArray(nil, json.RawMessage(`"error"`), ev))
	if p.HasID {
		ack, _ := json.Marshal(struct {
			OK    bool `json:"ok"`
			Error any  `json:"error"`
		}{false, struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}{code, message}})
		ss.ack(p.Nsp, p.ID, nil, ack)
	}
}

// Ready is nil: the outbox calls Conn.Wake when the hub has queued
// something.
func (ss *session) Ready() <-chan struct{} { return ss.box.Ready() }

var (
	updateHeader = []byte(`2["update_data",`)
	ackOK        = []byte(`[{"ok":true}]`)
)

// Take translates what the hub queued: updates into update_data events,
// joined and left replies into acks.
func (ss *session) Take(dst []engineio.Packet) []engineio.Packet {
	batch, overflowed := ss.box.Take(nil)
	if overflowed {
		return dst // the overflow callback has closed the session
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.main {
		// Taken means about to be written: as /ws does per frame, live
		// latency and snapshot or replay age apart.
		ss.srv.metrics.ObserveSent(time.Now(), batch)
	}
	for _, m := range batch {
		if m.Update {
			if !ss.main {
				continue
			}
			var b []byte
			if m.Meta != nil && m.Meta.Data != nil {
				b = m.Meta.Alt(updatePacket) // once per update, shared
			} else if data := protocol.UpdateData(m.Frame); data != nil {
				b = updatePacket(data) // a replay from history
			} else {
				continue
			}
			dst = append(dst, engineio.Packet{Type: engineio.Message, Data: b})
			continue
		}
		var reply struct {
			ID int64 `json:"id"`
		}
		if json.Unmarshal(m.Frame, &reply) != nil {
			continue
		}
		ackID, ok := ss.pending[reply.ID]
		if !ok {
			continue
		}
		delete(ss.pending, reply.ID)
		b := appendHeader(nil, typeAck, 0, "/", ackID, true)
		dst = append(dst, engineio.Packet{Type: engineio.Message, Data: append(b, ackOK...)})
	}
	return dst
}

// newID returns a random id for a namespace connection.
func newID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// updatePacket is the Socket.IO EVENT update_data carrying data.
func updatePacket(data []byte) []byte {
	b := make([]byte, 0, len(updateHeader)+len(data)+1)
	return append(append(append(b, updateHeader...), data...), ']')
}
