package protocol

import (
	"encoding/json"
	"strconv"
	"time"
)

// Client command names.
const (
	OpJoin  = "join"
	OpLeave = "leave"
)

// Command is one parsed client command.
type Command struct {
	Op    string
	Room  string
	ID    int64 // echoed in the reply when HasID
	HasID bool
	// Since asks for every update after this sequence number (resume).
	Since    uint64
	HasSince bool
	// History asks a join for the room's recent updates: the last
	// HistoryCount of them, or those of the last HistoryAge.
	HistoryCount int
	HistoryAge   time.Duration
}

// Bounds of a join's history window.
const (
	MaxHistoryCount = 100000
	MaxHistoryAge   = 24 * time.Hour
)

// Error is a protocol error reply. It implements error so that parsing and
// command handling can return it directly.
type Error struct {
	Code    string
	Message string
	Room    string // echoed when the command named a room
	ID      int64
	HasID   bool
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// wireCommand is the JSON shape of a command. The id and since fields are
// kept raw so that only JSON integers are accepted: encoding/json would
// otherwise take "7" (a string) for a json.Number.
type wireCommand struct {
	Op      *string         `json:"op"`
	Room    *string         `json:"room"`
	ID      json.RawMessage `json:"id"`
	Since   json.RawMessage `json:"since"`
	History json.RawMessage `json:"history"`
}

// ParseCommand parses one client frame. It returns an *Error (never another
// error type) naming what is wrong; the error carries the command's id and
// room whenever those could be read, so the reply can be matched.
//
// Bad looks like: not JSON, not an object, trailing data, "op" missing or
// unknown, "room" missing, not a string or not a valid name, "id" not an
// integer, "since" not a non-negative integer, "history" not a count or a
// duration in range, or given with since. Unknown fields are ignored
// so that clients can be newer than the gateway.
func ParseCommand(frame []byte) (Command, *Error) {
	if w, ok := decodeFast(frame); ok {
		return commandFrom(&w)
	}
	return parseCommandSlow(frame)
}

// parseCommandSlow is ParseCommand decoding with encoding/json only.
func parseCommandSlow(frame []byte) (Command, *Error) {
	w, perr := decodeJSON(frame)
	if perr != nil {
		return Command{}, perr
	}
	return commandFrom(&w)
}

// decodeJSON decodes a frame into its wire shape with encoding/json; the
// error is a bad_json one.
func decodeJSON(frame []byte) (w wireCommand, perr *Error) {
	if !isObject(frame) {
		return w, &Error{Code: CodeBadJSON, Message: "a command must be one JSON object"}
	}
	if err := json.Unmarshal(frame, &w); err != nil {
		return w, &Error{Code: CodeBadJSON, Message: "invalid command: " + jsonProblem(err)}
	}
	return w, nil
}

// commandFrom validates a decoded command, whichever way it was decoded.
func commandFrom(w *wireCommand) (Command, *Error) {
	var cmd Command
	if w.ID != nil && string(w.ID) != "null" {
		id, err := strconv.ParseInt(string(w.ID), 10, 64)
		if err != nil {
			return Command{}, &Error{Code: CodeBadJSON, Message: `"id" must be an integer`}
		}
		cmd.ID, cmd.HasID = id, true
	}
	fail := func(code, msg string) (Command, *Error) {
		return Command{}, &Error{Code: code, Message: msg, Room: cmd.Room, ID: cmd.ID, HasID: cmd.HasID}
	}
	if w.Room != nil {
		cmd.Room = *w.Room
	}
	if w.Op == nil {
		return fail(CodeBadOp, `"op" is missing`)
	}
	cmd.Op = *w.Op
	switch cmd.Op {
	case OpJoin, OpLeave:
	default:
		return fail(CodeBadOp, "unknown op; expected join or leave")
	}
	if w.Room == nil {
		return fail(CodeBadRoom, `"room" is missing`)
	}
	if err := CheckRoom(cmd.Room); err != nil {
		return fail(CodeBadRoom, err.Error())
	}
	if w.Since != nil && string(w.Since) != "null" {
		since, err := strconv.ParseUint(string(w.Since), 10, 64)
		if err != nil {
			return fail(CodeBadJSON, `"since" must be a non-negative integer`)
		}
		if cmd.Op != OpJoin {
			return fail(CodeBadJSON, `"since" is only valid with join`)
		}
		cmd.Since, cmd.HasSince = since, true
	}
	if w.History != nil && string(w.History) != "null" {
		if cmd.Op != OpJoin {
			return fail(CodeBadJSON, `"history" is only valid with join`)
		}
		if cmd.HasSince {
			return fail(CodeBadJSON, `"history" and "since" exclude each other: since resumes, history starts afresh`)
		}
		n, age, msg := parseHistory(w.History)
		if msg != "" {
			return fail(CodeBadJSON, msg)
		}
		cmd.HistoryCount, cmd.HistoryAge = n, age
	}
	return cmd, nil
}

// ParseHistory reads a join's history window for another transport's
// join (Socket.IO's); a bad one is a bad_json error.
func ParseHistory(raw json.RawMessage) (n int, age time.Duration, e *Error) {
	n, age, msg := parseHistory(raw)
	if msg != "" {
		return 0, 0, &Error{Code: CodeBadJSON, Message: msg}
	}
	return n, age, nil
}

// parseHistory reads a join's history window: a count of updates (a JSON
// integer, 1 to MaxHistoryCount) or a duration string ("90s", "5m", "1h";
// up to MaxHistoryAge).
func parseHistory(raw json.RawMessage) (n int, age time.Duration, problem string) {
	const bad = `"history" must be a count of updates (1 to 100000) or a duration such as "5m" (up to 24h)`
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, 0, bad
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > MaxHistoryAge {
			return 0, 0, bad
		}
		return 0, d, ""
	}
	c, err := strconv.Atoi(string(raw))
	if err != nil || c < 1 || c > MaxHistoryCount {
		return 0, 0, bad
	}
	return c, 0, ""
}

// isObject reports whether the first non-space byte of b opens an object.
func isObject(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		default:
			return false
		}
	}
	return false
}

// jsonProblem turns an encoding/json error into a short message without Go
// type names, which mean nothing to a client author.
func jsonProblem(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return "syntax error at byte " + strconv.FormatInt(e.Offset, 10)
	case *json.UnmarshalTypeError:
		return `field "` + e.Field + `" has the wrong type (got ` + e.Value + ")"
	}
	return "malformed JSON"
}
