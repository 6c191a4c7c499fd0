package main

import "bytes"

// The client reads only what it measures from the gateway's messages,
// whose field order the gateway's encoder fixes:
//
//	{"op":"update","room":"r3","seq":42,"prev":38,"data":{"ts":…,"tsn":…,…}}
//	{"op":"joined","room":"r3","id":7}
//	{"op":"error","code":"rate_limited","message":"…","room":"r3","id":7}
//
// so a few byte searches replace a JSON decode per message.

var (
	keyRoom = []byte(`"room":"`)
	keySeq  = []byte(`"seq":`)
	keyPrev = []byte(`"prev":`)
	keyData = []byte(`"data":`)
	keyTS   = []byte(`"ts":`)
	keyTSN  = []byte(`"tsn":`)
	keyID   = []byte(`"id":`)
	keyCode = []byte(`"code":"`)

	opUpdate = []byte(`{"op":"update"`)
	opJoined = []byte(`{"op":"joined"`)
	opLeft   = []byte(`{"op":"left"`)
	opError  = []byte(`{"op":"error"`)
)

type msgKind uint8

const (
	kindOther msgKind = iota
	kindUpdate
	kindJoined
	kindLeft
	kindError
)

// message is what scanMessage extracts; fields absent from the message are
// zero (hasSeq tells seq 0 from no seq).
type message struct {
	kind   msgKind
	room   []byte // aliases the frame
	seq    uint64
	prev   uint64
	hasSeq bool
	tsNano int64 // from tsn, else ts×1e6; 0 when absent
	id     int64
	hasID  bool
	code   []byte // error code, aliases the frame
}

func scanMessage(b []byte) message {
	var m message
	switch {
	case bytes.HasPrefix(b, opUpdate):
		m.kind = kindUpdate
		b = b[len(opUpdate):]
		m.room, b = stringField(b, keyRoom)
		data := bytes.Index(b, keyData)
		if data < 0 {
			data = len(b)
		}
		head := b[:data]
		if v, ok := uintField(head, keySeq); ok {
			m.seq, m.hasSeq = v, true
			m.prev, _ = uintField(head, keyPrev)
		}
		body := b[data:]
		if v, ok := uintField(body, keyTSN); ok {
			m.tsNano = int64(v)
		} else if v, ok := uintField(body, keyTS); ok {
			m.tsNano = int64(v) * 1e6
		}
	case bytes.HasPrefix(b, opJoined):
		m.kind = kindJoined
		m.room, b = stringField(b[len(opJoined):], keyRoom)
		m.id, m.hasID = intField(b, keyID)
	case bytes.HasPrefix(b, opLeft):
		m.kind = kindLeft
		m.room, b = stringField(b[len(opLeft):], keyRoom)
		m.id, m.hasID = intField(b, keyID)
	case bytes.HasPrefix(b, opError):
		m.kind = kindError
		m.code, _ = stringField(b, keyCode)
		// The message text comes first and may contain anything; the
		// room and id follow it.
		if i := bytes.LastIndex(b, keyRoom); i >= 0 {
			m.room, _ = stringField(b[i:], keyRoom)
		}
		if i := bytes.LastIndex(b, keyID); i >= 0 {
			m.id, m.hasID = intField(b[i:], keyID)
		}
	}
	return m
}

// stringField returns the string value after key (no escapes expected)
// and the rest of b after it.
func stringField(b, key []byte) (val, rest []byte) {
	i := bytes.Index(b, key)
	if i < 0 {
		return nil, b
	}
	b = b[i+len(key):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return nil, b
	}
	return b[:j], b[j+1:]
}

func uintField(b, key []byte) (uint64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	return parseUint(b[i+len(key):])
}

func intField(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	v, ok := parseUint(b)
	if neg {
		return -int64(v), ok
	}
	return int64(v), ok
}

func parseUint(b []byte) (uint64, bool) {
	var v uint64
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + uint64(c-'0')
		n++
	}
	return v, n > 0
}

// roomIndex parses the number in a room name made by roomName.
func roomIndex(room []byte) (int, bool) {
	if len(room) < 2 || room[0] != 'r' {
		return 0, false
	}
	v, ok := parseUint(room[1:])
	if !ok || int(v) < 0 {
		return 0, false
	}
	return int(v), true
}
