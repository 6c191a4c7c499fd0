package protocol

import "fmt"

// MaxRoomLen is the longest room name the protocol accepts.
const MaxRoomLen = 64

// ValidRoom reports whether name matches ^[A-Za-z0-9_-]{1,64}$. Such a name
// is always exactly one NATS subject token: it can never be a wildcard
// ("*", ">") nor contain a token separator (".") or whitespace.
func ValidRoom(name string) bool {
	if len(name) == 0 || len(name) > MaxRoomLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckRoom returns nil for a valid room name, or an error that says what is
// wrong with it, for people reading an error reply or a log line.
func CheckRoom(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("room name is empty")
	case len(name) > MaxRoomLen:
		return fmt.Errorf("room name is %d bytes, the limit is %d", len(name), MaxRoomLen)
	case !ValidRoom(name):
		return fmt.Errorf("room name may contain only A-Z, a-z, 0-9, '_' and '-'")
	}
	return nil
}
