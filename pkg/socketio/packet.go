package socketio

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// Socket.IO v5 packet types.
const (
	typeConnect      byte = 0
	typeDisconnect   byte = 1
	typeEvent        byte = 2
	typeAck          byte = 3
	typeConnectError byte = 4
	typeBinaryEvent  byte = 5
	typeBinaryAck    byte = 6
)

// maxAttachments bounds the binary attachments of one packet.
const maxAttachments = 16

// errMalformed is any packet that does not decode; it closes the session.
var errMalformed = errors.New("socketio: malformed packet")

// packet is one Socket.IO packet:
// <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>].
type packet struct {
	Type        byte
	Attachments int
	Nsp         string
	ID          int64
	HasID       bool
	Data        []byte // JSON, or empty
}

// decode parses and validates one packet from a client.
func decode(b []byte) (packet, error) {
	var p packet
	if len(b) == 0 || b[0] < '0' || b[0] > '6' {
		return p, errMalformed
	}
	p.Type, b = b[0]-'0', b[1:]
	if p.Type == typeBinaryEvent || p.Type == typeBinaryAck {
		i := bytes.IndexByte(b, '-')
		if i < 1 || i > 2 {
			return p, errMalformed
		}
		n, err := strconv.Atoi(string(b[:i]))
		if err != nil || n < 1 || n > maxAttachments {
			return p, errMalformed
		}
		p.Attachments, b = n, b[i+1:]
	}
	p.Nsp = "/"
	if len(b) > 0 && b[0] == '/' {
		if i := bytes.IndexByte(b, ','); i >= 0 {
			p.Nsp, b = string(b[:i]), b[i+1:]
		} else {
			p.Nsp, b = string(b), nil
		}
	}
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	if n > 0 {
		if n > 15 { // beyond what a JavaScript number holds exactly
			return p, errMalformed
		}
		p.ID, _ = strconv.ParseInt(string(b[:n]), 10, 64)
		p.HasID, b = true, b[n:]
	}
	p.Data = b
	if len(b) > 0 && !json.Valid(b) {
		return p, errMalformed
	}
	switch p.Type {
	case typeConnect:
		if len(b) > 0 && b[0] != '{' {
			return p, errMalformed
		}
	case typeDisconnect:
		if len(b) > 0 {
			return p, errMalformed
		}
	case typeEvent, typeBinaryEvent:
		var args []json.RawMessage
		if json.Unmarshal(b, &args) != nil || len(args) == 0 || len(args[0]) == 0 || args[0][0] != '"' {
			return p, errMalformed
		}
	case typeAck, typeBinaryAck:
		if !p.HasID || len(b) == 0 || b[0] != '[' {
			return p, errMalformed
		}
	default: // CONNECT_ERROR is never sent by a client
		return p, errMalformed
	}
	return p, nil
}

// appendHeader appends a packet's type, attachments, namespace and ack id;
// the JSON payload follows.
func appendHeader(dst []byte, typ byte, attachments int, nsp string, id int64, hasID bool) []byte {
	dst = append(dst, '0'+typ)
	if attachments > 0 {
		dst = strconv.AppendInt(dst, int64(attachments), 10)
		dst = append(dst, '-')
	}
	if nsp != "/" {
		dst = append(dst, nsp...)
		dst = append(dst, ',')
	}
	if hasID {
		dst = strconv.AppendInt(dst, id, 10)
	}
	return dst
}

// eventArgs splits an event's payload into its name and arguments. The
// payload was validated by decode.
func eventArgs(data []byte) (string, []json.RawMessage) {
	var args []json.RawMessage
	_ = json.Unmarshal(data, &args)
	var name string
	_ = json.Unmarshal(args[0], &name)
	return name, args[1:]
}

// appendArray appends a JSON array of already encoded values.
func appendArray(dst []byte, values ...json.RawMessage) []byte {
	dst = append(dst, '[')
	for i, v := range values {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, v...)
	}
	return append(dst, ']')
}
