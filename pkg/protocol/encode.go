package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// Reasons a producer payload is refused. They are stable strings so that
// they can label a metric.
var (
	ErrPayloadNotUTF8   = errors.New("payload is not valid UTF-8")
	ErrPayloadNotObject = errors.New("payload is not a JSON object")
	ErrPayloadInvalid   = errors.New("payload is not valid JSON")
)

// Update is one room update as the gateway sends it to clients.
type Update struct {
	Room string
	// Seq and Prev are the room's sequence numbers; both are omitted from
	// the wire when Seq is 0 (history off).
	Seq, Prev uint64
	// Missed marks an update sent in place of a resume that history could
	// not serve: updates between the client's since and this one are lost.
	Missed bool
	// Data is the producer's payload, compacted (see CompactPayload).
	Data []byte
}

// CompactPayload appends the producer payload src to dst as compact JSON
// (insignificant whitespace removed, nothing else changed). It refuses
// anything that is not exactly one JSON object in valid UTF-8: such a
// payload must be dropped and never forwarded.
func CompactPayload(dst *bytes.Buffer, src []byte) error {
	if !utf8.Valid(src) {
		return ErrPayloadNotUTF8
	}
	if !isObject(src) {
		return ErrPayloadNotObject
	}
	if err := json.Compact(dst, src); err != nil {
		return ErrPayloadInvalid
	}
	return nil
}

// AppendUpdate appends the wire form of u, whose Data must already be
// compact JSON (CompactPayload). The gateway calls it once per update and
// shares the result with every client of the room.
func AppendUpdate(dst []byte, u Update) []byte {
	dst = append(dst, `{"op":"update","room":"`...)
	dst = append(dst, u.Room...) // valid room names never need escaping
	dst = append(dst, '"')
	if u.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, u.Seq, 10)
		dst = append(dst, `,"prev":`...)
		dst = strconv.AppendUint(dst, u.Prev, 10)
	}
	if u.Missed {
		dst = append(dst, `,"missed":true`...)
	}
	dst = append(dst, `,"data":`...)
	dst = append(dst, u.Data...)
	return append(dst, '}')
}

// AppendJoined appends {"op":"joined","room":...,"id":...}.
func AppendJoined(dst []byte, room string, id int64, hasID bool) []byte {
	return appendAck(dst, "joined", room, id, hasID)
}

// AppendLeft appends {"op":"left","room":...,"id":...}.
func AppendLeft(dst []byte, room string, id int64, hasID bool) []byte {
	return appendAck(dst, "left", room, id, hasID)
}

func appendAck(dst []byte, op, room string, id int64, hasID bool) []byte {
	dst = append(dst, `{"op":"`...)
	dst = append(dst, op...)
	dst = append(dst, `","room":"`...)
	dst = append(dst, room...)
	dst = append(dst, '"')
	if hasID {
		dst = append(dst, `,"id":`...)
		dst = strconv.AppendInt(dst, id, 10)
	}
	return append(dst, '}')
}

// AppendError appends the error reply for e. The room is echoed as the
// client sent it, so it is escaped like any untrusted string.
func AppendError(dst []byte, e *Error) []byte {
	dst = append(dst, `{"op":"error","code":"`...)
	dst = append(dst, e.Code...)
	dst = append(dst, `","message":`...)
	dst = appendString(dst, e.Message)
	if e.Room != "" {
		dst = append(dst, `,"room":`...)
		dst = appendString(dst, e.Room)
	}
	if e.HasID {
		dst = append(dst, `,"id":`...)
		dst = strconv.AppendInt(dst, e.ID, 10)
	}
	return append(dst, '}')
}

func appendString(dst []byte, s string) []byte {
	b, err := json.Marshal(s)
	if err != nil { // cannot happen for a string
		return append(dst, `""`...)
	}
	return append(dst, b...)
}

// UpdateData returns the producer payload inside an update frame made by
// AppendUpdate, without copying, or nil for another frame. It relies on
// data being the frame's last field, and on no earlier field containing
// `,"data":` (room names cannot). Package socketio uses it to re-wrap the
// payload as a Socket.IO event.
func UpdateData(frame []byte) []byte {
	i := bytes.Index(frame, []byte(`,"data":`))
	if i < 0 || frame[len(frame)-1] != '}' {
		return nil
	}
	return frame[i+len(`,"data":`) : len(frame)-1]
}
