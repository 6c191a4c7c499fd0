package auth

import (
	"fmt"
	"strings"
	"time"

	"github.com/roomcast/roomcast/pkg/protocol"
)

// Pattern is a room name, or a pattern in which each * stands for any run
// of room-name characters ("sales-*", "*-eu", "*").
type Pattern struct {
	parts []string // split at *; one part means no wildcard
}

// ParsePattern checks a pattern: room-name characters and *, 1 to 64 of
// them. A pattern can only match valid room names, so it can never grant
// a NATS wildcard.
func ParsePattern(s string) (Pattern, error) {
	if len(s) == 0 || len(s) > 64 {
		return Pattern{}, fmt.Errorf("room pattern %q must be 1 to 64 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '*') {
			return Pattern{}, fmt.Errorf("room pattern %q: only letters, digits, '-', '_' and '*' are allowed", s)
		}
	}
	return Pattern{parts: strings.Split(s, "*")}, nil
}

// ParsePatterns parses a list of patterns.
func ParsePatterns(list []string) ([]Pattern, error) {
	out := make([]Pattern, 0, len(list))
	for _, s := range list {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Match reports whether room matches the pattern. Only valid room names
// match: a * never stands for a NATS wildcard or a subject separator.
func (p Pattern) Match(room string) bool {
	if len(p.parts) == 1 {
		return room == p.parts[0]
	}
	if !protocol.ValidRoom(room) {
		return false
	}
	first, last := p.parts[0], p.parts[len(p.parts)-1]
	if len(room) < len(first)+len(last) || !strings.HasPrefix(room, first) || !strings.HasSuffix(room, last) {
		return false
	}
	rest := room[len(first) : len(room)-len(last)]
	for _, mid := range p.parts[1 : len(p.parts)-1] {
		i := strings.Index(rest, mid)
		if i < 0 {
			return false
		}
		rest = rest[i+len(mid):]
	}
	return true
}

// Grant is what one connection may do. A nil *Grant allows everything:
// it is what a gateway without authentication gives every client.
type Grant struct {
	Subject  string    // the token's sub, for logs
	Expires  time.Time // zero: never
	patterns []Pattern
}

// Allows reports whether the grant lets its holder join room.
func (g *Grant) Allows(room string) bool {
	if g == nil {
		return true
	}
	for _, p := range g.patterns {
		if p.Match(room) {
			return true
		}
	}
	return false
}

// ExpiresIn is the time left before the grant expires; ok is false when it
// never does.
func (g *Grant) ExpiresIn(now time.Time) (d time.Duration, ok bool) {
	if g == nil || g.Expires.IsZero() {
		return 0, false
	}
	return g.Expires.Sub(now), true
}
