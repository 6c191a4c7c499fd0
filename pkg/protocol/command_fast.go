package protocol

// The fast path of ParseCommand: a scanner for the commands clients
// actually send, such as {"op":"join","room":"sales","id":7}. It takes a
// conservative subset of JSON and gives up (ok=false) on anything else, so
// that encoding/json decides every frame the subset does not cover; within
// the subset it decodes exactly what encoding/json would.

// opJoinValue and opLeaveValue are what a fast-decoded command's Op points
// to, so that the usual ops cost no allocation. Nothing writes through them.
var opJoinValue, opLeaveValue = OpJoin, OpLeave

// The wire fields, as bits of the set of those seen.
const (
	fieldOp = 1 << iota
	fieldRoom
	fieldID
	fieldSince
	fieldHistory
)

// fastStrings holds the strings a fast-decoded command points to, in a
// single allocation.
type fastStrings struct{ op, room string }

// decodeFast decodes a frame into its wire shape without encoding/json. It
// accepts only:
//   - one object, with JSON whitespace (space, \t, \n, \r) around tokens
//     and nothing but whitespace after it;
//   - members named exactly op, room, id, since or history (encoding/json
//     matches names regardless of case, and ignores unknown ones), each at
//     most once;
//   - values that are strings of printable ASCII (0x20 to 0x7E) without
//     '"' or '\', or integers -?(0|[1-9][0-9]*); op and room must be
//     strings.
//
// Anything else returns ok=false and the frame is left to encoding/json.
// The raw id, since and history alias frame.
func decodeFast(frame []byte) (w wireCommand, ok bool) {
	i := skipSpace(frame, 0)
	if i == len(frame) || frame[i] != '{' {
		return wireCommand{}, false
	}
	i = skipSpace(frame, i+1)
	if i < len(frame) && frame[i] == '}' {
		return wireCommand{}, skipSpace(frame, i+1) == len(frame)
	}
	var seen int
	var box *fastStrings
	for {
		// The name.
		if i == len(frame) || frame[i] != '"' {
			return wireCommand{}, false
		}
		end := scanString(frame, i+1)
		if end < 0 {
			return wireCommand{}, false
		}
		var field int
		switch string(frame[i+1 : end]) {
		case "op":
			field = fieldOp
		case "room":
			field = fieldRoom
		case "id":
			field = fieldID
		case "since":
			field = fieldSince
		case "history":
			field = fieldHistory
		default:
			return wireCommand{}, false
		}
		if seen&field != 0 {
			return wireCommand{}, false
		}
		seen |= field
		i = skipSpace(frame, end+1)
		if i == len(frame) || frame[i] != ':' {
			return wireCommand{}, false
		}
		i = skipSpace(frame, i+1)

		// The value.
		start := i
		isString := i < len(frame) && frame[i] == '"'
		if isString {
			end = scanString(frame, i+1)
			if end < 0 {
				return wireCommand{}, false
			}
			i = end + 1
		} else if i = scanInt(frame, i); i < 0 {
			return wireCommand{}, false
		}
		raw := frame[start:i:i]
		switch field {
		case fieldOp, fieldRoom:
			if !isString {
				return wireCommand{}, false
			}
			s := raw[1 : len(raw)-1]
			if field == fieldOp && string(s) == OpJoin {
				w.Op = &opJoinValue
				break
			}
			if field == fieldOp && string(s) == OpLeave {
				w.Op = &opLeaveValue
				break
			}
			if box == nil {
				box = new(fastStrings)
			}
			if field == fieldOp {
				box.op = string(s)
				w.Op = &box.op
			} else {
				box.room = string(s)
				w.Room = &box.room
			}
		case fieldID:
			w.ID = raw
		case fieldSince:
			w.Since = raw
		case fieldHistory:
			w.History = raw
		}

		// A comma and the next member, or the end of the object.
		i = skipSpace(frame, i)
		if i == len(frame) {
			return wireCommand{}, false
		}
		if frame[i] == ',' {
			i = skipSpace(frame, i+1)
			continue
		}
		if frame[i] != '}' {
			return wireCommand{}, false
		}
		if skipSpace(frame, i+1) != len(frame) {
			return wireCommand{}, false
		}
		return w, true
	}
}

// skipSpace returns the index of the first byte of b at or after i that is
// not JSON whitespace, or len(b).
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString returns the index of the quote that closes the string whose
// contents start at b[i], or -1 if a byte before it is not printable ASCII
// or is a backslash, or the string does not end.
func scanString(b []byte, i int) int {
	for ; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			return i
		}
		if c < 0x20 || c > 0x7e || c == '\\' {
			return -1
		}
	}
	return -1
}

// scanInt returns the index just after the integer -?(0|[1-9][0-9]*) that
// starts at b[i], or -1 if none does. A fraction or an exponent after it
// is left to the caller, which takes it for an unexpected byte.
func scanInt(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i == len(b) || b[i] < '0' || b[i] > '9' {
		return -1
	}
	if b[i] == '0' {
		return i + 1
	}
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}
