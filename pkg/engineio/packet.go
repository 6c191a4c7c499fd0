package engineio

import (
	"bytes"
	"encoding/base64"
	"errors"
)

// Packet types of Engine.IO v4, as their wire characters.
const (
	Open    byte = '0'
	Close   byte = '1'
	Ping    byte = '2'
	Pong    byte = '3'
	Message byte = '4'
	Upgrade byte = '5'
	Noop    byte = '6'
)

// separator separates the packets of a long-polling payload.
const separator = 0x1e

// Packet is one Engine.IO packet.
type Packet struct {
	Type byte
	// Data is the packet's payload: text for every type but a binary
	// message. The slice may be shared; never modify it.
	Data []byte
	// Binary marks a binary message (Type is Message).
	Binary bool
}

// ErrInvalidPacket is returned for a packet or payload that does not
// decode.
var ErrInvalidPacket = errors.New("engineio: invalid packet")

// decodeText decodes one text packet: its type character and its data.
func decodeText(b []byte) (Packet, error) {
	if len(b) == 0 || b[0] < Open || b[0] > Noop {
		return Packet{}, ErrInvalidPacket
	}
	return Packet{Type: b[0], Data: b[1:]}, nil
}

// decodePayload decodes a long-polling request body: packets separated by
// 0x1e, binary ones as "b" and base64.
func decodePayload(body []byte) ([]Packet, error) {
	if len(body) == 0 {
		return nil, ErrInvalidPacket
	}
	var packets []Packet
	for len(body) > 0 {
		var part []byte
		if i := bytes.IndexByte(body, separator); i >= 0 {
			part, body = body[:i], body[i+1:]
			if len(body) == 0 {
				return nil, ErrInvalidPacket // a trailing separator
			}
		} else {
			part, body = body, nil
		}
		if len(part) > 0 && part[0] == 'b' {
			data := make([]byte, base64.StdEncoding.DecodedLen(len(part)-1))
			n, err := base64.StdEncoding.Decode(data, part[1:])
			if err != nil {
				return nil, ErrInvalidPacket
			}
			packets = append(packets, Packet{Type: Message, Data: data[:n], Binary: true})
			continue
		}
		p, err := decodeText(part)
		if err != nil {
			return nil, err
		}
		packets = append(packets, p)
	}
	return packets, nil
}

// appendPayload appends the long-polling form of packets to dst.
func appendPayload(dst []byte, packets []Packet) []byte {
	for i, p := range packets {
		if i > 0 {
			dst = append(dst, separator)
		}
		if p.Binary {
			dst = append(dst, 'b')
			dst = base64.StdEncoding.AppendEncode(dst, p.Data)
			continue
		}
		dst = append(dst, p.Type)
		dst = append(dst, p.Data...)
	}
	return dst
}
