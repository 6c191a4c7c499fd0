package protocol

import (
	"fmt"
	"strings"
)

// DefaultSubjectPrefix is the subject prefix of room updates: a room's
// subject is <prefix>.<room>.
const DefaultSubjectPrefix = "roomcast.room"

// CheckSubjectPrefix accepts one or more literal subject tokens separated
// by dots: no wildcards, no whitespace, no empty token.
func CheckSubjectPrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("subject prefix is empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return fmt.Errorf("subject prefix %q has an empty token", prefix)
		}
		if tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return fmt.Errorf("subject prefix %q must be literal tokens without wildcards or spaces", prefix)
		}
	}
	return nil
}
