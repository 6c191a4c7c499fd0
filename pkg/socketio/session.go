package socketio

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/roomcast/pkg/client"
	"github.com/roomcast/roomcast/pkg/engineio"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// session is the Socket.IO side of one Engine.IO session.
type session struct {
	srv    *Server
	conn   *engineio.Conn
	box    *outbox.Outbox
	client *client.Client // grant, rooms, budgets, join and leave

	// Owned by the goroutine carrying the current packet (engineio
	// serialises Message and Closed).
	nsps     map[string]Grant // connected namespaces
	partial  *packet          // a binary packet waiting for its attachments
	attached [][]byte         // the attachments received so far
	timer    *time.Timer

	connected atomic.Bool // some namespace was connected: the connect timeout is off

	mu      sync.Mutex // shared with the writer's Take
	main    bool       // the main namespace is connected: updates are sent
	nextID  int64
	pending map[int64]asked // reply id given to the core → what the client asked
}

// asked is what a Socket.IO packet that became a core command needs for
// its answer: the namespace, and the client's ack id if it wants an ack.
type asked struct {
	nsp    string
	ack    int64
	hasAck bool
}

func (s *Server) open(c *engineio.Conn) engineio.Handler {
	ss := &session{
		srv:     s,
		conn:    c,
		nsps:    make(map[string]Grant),
		pending: make(map[int64]asked),
	}
	// The outbox wakes the session's writer itself (Conn.Wake), so an idle
	// WebSocket needs no goroutine waiting on a Ready channel.
	ss.box = outbox.NewNotify(s.cfg.Outbox, func() {
		s.metrics.SlowDisconnects.Inc()
		c.Close(4008, "client too slow")
	}, c.Wake)
	// An expiring grant closes the session, with 4001 on a WebSocket, as
	// /ws does: the client reconnects on its own and CONNECTs again, and
	// its auth option (a function) can fetch a new token.
	ss.client = s.rules.New(ss.box, func() {
		c.Close(protocol.CloseTokenExpired, "token expired")
	})
	ss.timer = time.AfterFunc(s.cfg.ConnectTimeout, func() {
		if !ss.connected.Load() {
			c.Close(1000, "no namespace connected in time")
		}
	})
	s.metrics.ConnectionsAccepted.Inc()
	s.metrics.Connections.Inc()
	return ss
}

// Closed leaves every room; updates still queued are dropped.
func (ss *session) Closed(reason string) {
	ss.timer.Stop()
	ss.client.Close() // out of every room, the expiry stopped, the queue freed
	ss.srv.metrics.Connections.Dec()
	code, byClient := ss.conn.CloseStatus()
	ss.srv.metrics.Disconnected(code, byClient)
	ss.srv.log.Debug("socket.io session closed", "sid", ss.conn.ID(), "reason", reason, "code", code, "by_client", byClient)
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
		ss.send(appendHeader(nil, typeConnectError, 0, p.Nsp, 0, false), []byte(`{"message":"too many commands; slow down","data":{"code":"rate_limited"}}`))
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
	if p.Nsp == "/" {
		ss.client.SetGrant(grant)
	} else {
		ss.client.ExpireWith(grant)
	}
	if p.Nsp == "/" {
		ss.mu.Lock()
		ss.main = true
		ss.mu.Unlock()
	}
	sid, _ := json.Marshal(struct {
		SID string `json:"sid"`
	}{engineio.NewID()})
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
	ss.client.LeaveAll()
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
		room := ""
		if name == "join" || name == "leave" {
			cmd, _, _ := roomArg(args) // named in the refusal, so the client knows which to retry
			room = cmd.Room
		}
		ss.fail(p, client.RateLimited(room, 0, false))
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
			ss.fail(p, &protocol.Error{Code: protocol.CodeBadOp, Message: "unknown event; expected join or leave"})
		}
	}
}

// allow takes one from the client's command budget (events and
// CONNECTs). Refused more than command_burst times in a row, the session
// is closed with 1008.
func (ss *session) allow() bool {
	switch ss.client.Spend(time.Now()) {
	case client.Flooded:
		ss.conn.Close(protocol.ClosePolicyViolation, "event flood")
		return false
	case client.Limited:
		return false
	}
	return true
}

// roomArg reads the argument of join and leave into a command:
// {room: "sales", since: 41} or {room: "sales", history: 50 | "5m"}, or
// "sales". The room is set whenever it could be read, for the error.
func roomArg(args []json.RawMessage) (cmd protocol.Command, ok bool, e *protocol.Error) {
	if len(args) == 0 {
		return cmd, false, &protocol.Error{Code: protocol.CodeBadRoom, Message: `"room" is missing`}
	}
	if json.Unmarshal(args[0], &cmd.Room) != nil {
		var obj struct {
			Room    *string         `json:"room"`
			Since   *uint64         `json:"since"`
			History json.RawMessage `json:"history"`
		}
		if err := json.Unmarshal(args[0], &obj); err != nil {
			return cmd, false, &protocol.Error{Code: protocol.CodeBadJSON, Message: "expected {room: <name>} or a room name"}
		}
		if obj.Room == nil {
			return cmd, false, &protocol.Error{Code: protocol.CodeBadRoom, Message: `"room" is missing`}
		}
		cmd.Room = *obj.Room
		if obj.Since != nil {
			cmd.Since, cmd.HasSince = *obj.Since, true
		}
		if obj.History != nil && string(obj.History) != "null" {
			var e *protocol.Error
			if cmd.HistoryCount, cmd.HistoryAge, e = protocol.ParseHistory(obj.History); e != nil {
				return cmd, false, e
			}
			if cmd.HasSince {
				return cmd, false, &protocol.Error{Code: protocol.CodeBadJSON, Message: `"since" and "history" exclude each other`}
			}
		}
	}
	if err := protocol.CheckRoom(cmd.Room); err != nil {
		return cmd, false, &protocol.Error{Code: protocol.CodeBadRoom, Message: err.Error()}
	}
	return cmd, true, nil
}

func (ss *session) join(p packet, args []json.RawMessage) {
	cmd, ok, e := roomArg(args)
	if !ok {
		e.Room = cmd.Room
		ss.fail(p, e)
		return
	}
	cmd.Op, cmd.ID, cmd.HasID = protocol.OpJoin, ss.expect(p), true
	if ss.client.Command(cmd) == client.Unavailable {
		ss.forget(cmd.ID)
		ss.srv.log.Warn("join failed: no NATS", "room", cmd.Room)
		ss.conn.Close(protocol.CloseTryAgainLater, "gateway cannot reach NATS")
	}
}

func (ss *session) leave(p packet, args []json.RawMessage) {
	cmd, ok, e := roomArg(args)
	if !ok {
		e.Room = cmd.Room
		ss.fail(p, e)
		return
	}
	cmd.Op, cmd.ID, cmd.HasID = protocol.OpLeave, ss.expect(p), true
	ss.client.Command(cmd)
}

// expect returns the id to give the core for a command from p; the reply
// with it is answered on p's namespace, with an ack if p asked for one.
func (ss *session) expect(p packet) int64 {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.nextID++
	ss.pending[ss.nextID] = asked{nsp: p.Nsp, ack: p.ID, hasAck: p.HasID}
	return ss.nextID
}

// forget drops the answer expected for a reply that will not come.
func (ss *session) forget(id int64) {
	ss.mu.Lock()
	delete(ss.pending, id)
	ss.mu.Unlock()
}

// fail refuses p with e, through the core's queue like every reply: the
// error event, and the ack when p asked for one.
func (ss *session) fail(p packet, e *protocol.Error) {
	e.ID, e.HasID = ss.expect(p), true
	ss.client.Refuse(e)
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
		if m.Pub != nil {
			if !ss.main {
				continue
			}
			b := m.Pub.Encoded(outbox.EncSocketIO, updatePacket).([]byte) // once per update, shared
			dst = append(dst, engineio.Packet{Type: engineio.Message, Data: b})
			continue
		}
		a, ok := ss.pending[m.Reply.ID]
		if !ok {
			continue
		}
		delete(ss.pending, m.Reply.ID)
		if m.Reply.Kind == outbox.Failed {
			dst = appendFailed(dst, a, m.Reply)
			continue
		}
		if a.hasAck {
			b := appendHeader(nil, typeAck, 0, a.nsp, a.ack, true)
			dst = append(dst, engineio.Packet{Type: engineio.Message, Data: append(b, ackOK...)})
		}
	}
	return dst
}

// appendFailed is a refused command's answer: the error event, then the
// ack {ok: false, error} if the client asked for one.
func appendFailed(dst []engineio.Packet, a asked, r *outbox.Reply) []engineio.Packet {
	ev, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Room    string `json:"room,omitempty"`
	}{r.Code, r.Message, r.Room})
	b := appendHeader(nil, typeEvent, 0, a.nsp, 0, false)
	dst = append(dst, engineio.Packet{Type: engineio.Message, Data: appendArray(b, json.RawMessage(`"error"`), ev)})
	if !a.hasAck {
		return dst
	}
	ack, _ := json.Marshal(struct {
		OK    bool `json:"ok"`
		Error any  `json:"error"`
	}{false, struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{r.Code, r.Message}})
	b = appendHeader(nil, typeAck, 0, a.nsp, a.ack, true)
	return append(dst, engineio.Packet{Type: engineio.Message, Data: appendArray(b, ack)})
}

// updatePacket is the Socket.IO EVENT update_data carrying the update's
// payload.
func updatePacket(p *outbox.Publication) any {
	b := make([]byte, 0, len(updateHeader)+len(p.Data)+1)
	b = append(append(append(b, updateHeader...), p.Data...), ']')
	return b[:len(b):len(b)]
}
