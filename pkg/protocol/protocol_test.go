package protocol

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestValidRoom(t *testing.T) {
	t.Parallel()
	tests := []struct {
		room string
		ok   bool
	}{
		{"sales", true},
		{"Sales_2024-eu", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{">", false},
		{"*", false},
		{"a.b", false},
		{"a b", false},
		{"销售", false},
		{"sales\n", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		if got := ValidRoom(tt.room); got != tt.ok {
			t.Errorf("ValidRoom(%q) = %v, want %v", tt.room, got, tt.ok)
		}
		if err := CheckRoom(tt.room); (err == nil) != tt.ok {
			t.Errorf("CheckRoom(%q) = %v, want ok=%v", tt.room, err, tt.ok)
		}
	}
}

func TestParseCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame string
		want  Command
		code  string // expected error code, "" for success
		errID bool   // the error must carry the id
	}{
		{"join", `{"op":"join","room":"sales"}`, Command{Op: OpJoin, Room: "sales"}, "", false},
		{"join with id", `{"op":"join","room":"sales","id":7}`, Command{Op: OpJoin, Room: "sales", ID: 7, HasID: true}, "", false},
		{"leave", ` {"op":"leave","room":"visitors","id":-1} `, Command{Op: OpLeave, Room: "visitors", ID: -1, HasID: true}, "", false},
		{"since", `{"op":"join","room":"s","since":41}`, Command{Op: OpJoin, Room: "s", Since: 41, HasSince: true}, "", false},
		{"since zero", `{"op":"join","room":"s","since":0}`, Command{Op: OpJoin, Room: "s", HasSince: true}, "", false},
		{"history count", `{"op":"join","room":"s","history":300}`, Command{Op: OpJoin, Room: "s", HistoryCount: 300}, "", false},
		{"history age", `{"op":"join","room":"s","history":"5m"}`, Command{Op: OpJoin, Room: "s", HistoryAge: 5 * time.Minute}, "", false},
		{"history null", `{"op":"join","room":"s","history":null}`, Command{Op: OpJoin, Room: "s"}, "", false},
		{"null id", `{"op":"join","room":"s","id":null}`, Command{Op: OpJoin, Room: "s"}, "", false},
		{"unknown field ignored", `{"op":"join","room":"s","x":[1,2]}`, Command{Op: OpJoin, Room: "s"}, "", false},
		{"malformed", `{"op":"join"`, Command{}, CodeBadJSON, false},
		{"not object", `["join","sales"]`, Command{}, CodeBadJSON, false},
		{"string", `"join"`, Command{}, CodeBadJSON, false},
		{"empty", ``, Command{}, CodeBadJSON, false},
		{"blank", "  \n", Command{}, CodeBadJSON, false},
		{"trailing data", `{"op":"join","room":"s"}{}`, Command{}, CodeBadJSON, false},
		{"two lines", "{\"op\":\"join\",\"room\":\"s\"}\n{\"op\":\"leave\",\"room\":\"s\"}", Command{}, CodeBadJSON, false},
		{"missing op", `{"room":"s","id":3}`, Command{}, CodeBadOp, true},
		{"unknown op", `{"op":"publish","room":"s","id":3}`, Command{}, CodeBadOp, true},
		{"op wrong type", `{"op":1,"room":"s"}`, Command{}, CodeBadJSON, false},
		{"missing room", `{"op":"join","id":3}`, Command{}, CodeBadRoom, true},
		{"room wrong type", `{"op":"join","room":5}`, Command{}, CodeBadJSON, false},
		{"room >", `{"op":"join","room":">","id":4}`, Command{}, CodeBadRoom, true},
		{"room *", `{"op":"join","room":"*"}`, Command{}, CodeBadRoom, false},
		{"room a.b", `{"op":"join","room":"a.b"}`, Command{}, CodeBadRoom, false},
		{"room empty", `{"op":"join","room":""}`, Command{}, CodeBadRoom, false},
		{"room 65", `{"op":"join","room":"` + strings.Repeat("x", 65) + `"}`, Command{}, CodeBadRoom, false},
		{"room non-ascii", `{"op":"join","room":"销售"}`, Command{}, CodeBadRoom, false},
		{"id string", `{"op":"join","room":"s","id":"7"}`, Command{}, CodeBadJSON, false},
		{"id fraction", `{"op":"join","room":"s","id":1.5}`, Command{}, CodeBadJSON, false},
		{"id huge", `{"op":"join","room":"s","id":99999999999999999999}`, Command{}, CodeBadJSON, false},
		{"since negative", `{"op":"join","room":"s","since":-1,"id":2}`, Command{}, CodeBadJSON, true},
		{"since string", `{"op":"join","room":"s","since":"4"}`, Command{}, CodeBadJSON, false},
		{"since on leave", `{"op":"leave","room":"s","since":4}`, Command{}, CodeBadJSON, false},
		{"history zero", `{"op":"join","room":"s","history":0}`, Command{}, CodeBadJSON, false},
		{"history too many", `{"op":"join","room":"s","history":100001}`, Command{}, CodeBadJSON, false},
		{"history float", `{"op":"join","room":"s","history":1.5}`, Command{}, CodeBadJSON, false},
		{"history bad duration", `{"op":"join","room":"s","history":"5 minutes"}`, Command{}, CodeBadJSON, false},
		{"history negative duration", `{"op":"join","room":"s","history":"-5m"}`, Command{}, CodeBadJSON, false},
		{"history beyond a day", `{"op":"join","room":"s","history":"25h"}`, Command{}, CodeBadJSON, false},
		{"history object", `{"op":"join","room":"s","history":{"n":1}}`, Command{}, CodeBadJSON, false},
		{"history with since", `{"op":"join","room":"s","since":4,"history":10}`, Command{}, CodeBadJSON, false},
		{"history on leave", `{"op":"leave","room":"s","history":10}`, Command{}, CodeBadJSON, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, perr := ParseCommand([]byte(tt.frame))
			if tt.code == "" {
				if perr != nil {
					t.Fatalf("unexpected error %v", perr)
				}
				if got != tt.want {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
				return
			}
			if perr == nil {
				t.Fatalf("got %+v, want error %s", got, tt.code)
			}
			if perr.Code != tt.code {
				t.Fatalf("code %s (%s), want %s", perr.Code, perr.Message, tt.code)
			}
			if perr.Message == "" {
				t.Fatal("error without message")
			}
			if tt.errID && !perr.HasID {
				t.Fatal("error does not carry the command id")
			}
		})
	}
}

func TestCompactPayload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
		err  error
	}{
		{`{"ts": 1, "sales" : 12.5}`, `{"ts":1,"sales":12.5}`, nil},
		{"\n{ \"label\": \"销售额 a  b\" }\n", `{"label":"销售额 a  b"}`, nil},
		{`{"a":"\u2028<&>"}`, `{"a":"\u2028<&>"}`, nil},
		{`{}`, `{}`, nil},
		{`[1,2]`, ``, ErrPayloadNotObject},
		{`42`, ``, ErrPayloadNotObject},
		{`"x"`, ``, ErrPayloadNotObject},
		{`null`, ``, ErrPayloadNotObject},
		{``, ``, ErrPayloadNotObject},
		{`{"a":1`, ``, ErrPayloadInvalid},
		{`{"a":1}{"b":2}`, ``, ErrPayloadInvalid},
		{`{"a":1} x`, ``, ErrPayloadInvalid},
		{"{\"a\":\"\xff\"}", ``, ErrPayloadNotUTF8},
		{"{\"a\":\"tab\there\"}", ``, ErrPayloadInvalid},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		err := CompactPayload(&buf, []byte(tt.in))
		if err != tt.err {
			t.Errorf("CompactPayload(%q) error = %v, want %v", tt.in, err, tt.err)
			continue
		}
		if err == nil && buf.String() != tt.want {
			t.Errorf("CompactPayload(%q) = %q, want %q", tt.in, buf.String(), tt.want)
		}
	}
}

func TestEncode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"joined", AppendJoined(nil, "sales", 1, true), `{"op":"joined","room":"sales","id":1}`},
		{"joined no id", AppendJoined(nil, "sales", 0, false), `{"op":"joined","room":"sales"}`},
		{"left", AppendLeft(nil, "sales", 2, true), `{"op":"left","room":"sales","id":2}`},
		{"update", AppendUpdate(nil, Update{Room: "sales", Data: []byte(`{"a":1}`)}), `{"op":"update","room":"sales","data":{"a":1}}`},
		{"update seq", AppendUpdate(nil, Update{Room: "sales", Seq: 42, Prev: 38, Data: []byte(`{}`)}), `{"op":"update","room":"sales","seq":42,"prev":38,"data":{}}`},
		{"update missed", AppendUpdate(nil, Update{Room: "s", Seq: 9, Prev: 7, Missed: true, Data: []byte(`{}`)}), `{"op":"update","room":"s","seq":9,"prev":7,"missed":true,"data":{}}`},
		{"error", AppendError(nil, &Error{Code: CodeBadRoom, Message: "bad", Room: "a\"b", ID: 3, HasID: true}), `{"op":"error","code":"bad_room","message":"bad","room":"a\"b","id":3}`},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, tt.got, tt.want)
		}
		if !json.Valid(tt.got) {
			t.Errorf("%s: not valid JSON: %s", tt.name, tt.got)
		}
	}
}

// FuzzParseCommand checks that no frame panics the parser, that accepted
// commands always carry a valid op and room, and that every error reply
// encodes to valid JSON.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		`{"op":"join","room":"sales","id":1}`,
		`{"op":"leave","room":"visitors"}`,
		`{"op":"join","room":"s","since":41}`,
		`{"op":"join","room":">"}`,
		`{"id":"x"}`, `[]`, `{`, ``, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		cmd, perr := ParseCommand(frame)
		if perr != nil {
			if perr.Code == "" || perr.Message == "" {
				t.Fatalf("empty error for %q", frame)
			}
			if out := AppendError(nil, perr); !json.Valid(out) {
				t.Fatalf("error reply is not JSON: %q", out)
			}
			return
		}
		if cmd.Op != OpJoin && cmd.Op != OpLeave {
			t.Fatalf("accepted op %q", cmd.Op)
		}
		if !ValidRoom(cmd.Room) {
			t.Fatalf("accepted room %q", cmd.Room)
		}
		if !json.Valid(AppendJoined(nil, cmd.Room, cmd.ID, cmd.HasID)) {
			t.Fatal("joined reply is not JSON")
		}
	})
}

// FuzzCompactPayload checks that whatever a producer publishes, the gateway
// either refuses it or forwards one valid JSON object in valid UTF-8.
func FuzzCompactPayload(f *testing.F) {
	for _, s := range []string{`{"ts":1,"sales":3}`, ` { "a" : [1, {"b":null}] } `, `[1]`, `{"a":"\xff"}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var buf bytes.Buffer
		if err := CompactPayload(&buf, payload); err != nil {
			return
		}
		out := AppendUpdate(nil, Update{Room: "r", Seq: 1, Data: buf.Bytes()})
		var v struct {
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(out, &v); err != nil || v.Data == nil {
			t.Fatalf("forwarded an invalid update %q from %q: %v", out, payload, err)
		}
	})
}

func TestCheckSubjectPrefix(t *testing.T) {
	t.Parallel()
	for prefix, ok := range map[string]bool{
		"roomcast.room": true, "rooms": true, "a.b.c": true,
		"": false, ".a": false, "a.": false, "a..b": false, "a.*": false,
		"a.>": false, "a b": false, "a.b*": false,
	} {
		if err := CheckSubjectPrefix(prefix); (err == nil) != ok {
			t.Errorf("CheckSubjectPrefix(%q) = %v, want ok=%v", prefix, err, ok)
		}
	}
}

func BenchmarkParseCommand(b *testing.B) {
	frames := []struct{ name, frame string }{
		{"join", `{"op":"join","room":"sales"}`},
		{"join_id_since", `{"op":"join","room":"sales","id":17,"since":41}`},
	}
	paths := []struct {
		name  string
		parse func([]byte) (Command, *Error)
	}{
		{"fast", ParseCommand},
		{"slow", parseCommandSlow}, // encoding/json only
	}
	for _, fr := range frames {
		frame := []byte(fr.frame)
		for _, p := range paths {
			b.Run(fr.name+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := p.parse(frame); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkCompactPayload(b *testing.B) {
	payload := []byte(`{ "ts": 1764124800000, "timestamp": "03:20:00", "sales": 4211.5, "orders": 117 }`)
	var buf bytes.Buffer
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		buf.Reset()
		if err := CompactPayload(&buf, payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendUpdate(b *testing.B) {
	u := Update{Room: "sales", Seq: 4242, Prev: 4238, Data: []byte(`{"ts":1764124800000,"timestamp":"03:20:00","sales":4211.5,"orders":117}`)}
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendUpdate(dst[:0], u)
	}
}

func TestUpdateData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		u    Update
		want string
	}{
		{Update{Room: "sales", Data: []byte(`{"a":1}`)}, `{"a":1}`},
		{Update{Room: "data", Seq: 42, Prev: 41, Missed: true, Data: []byte(`{"data":{"x":[1]}}`)}, `{"data":{"x":[1]}}`},
	}
	for _, tt := range tests {
		if got := UpdateData(AppendUpdate(nil, tt.u)); string(got) != tt.want {
			t.Errorf("%+v: got %q", tt.u, got)
		}
	}
	for _, frame := range []string{`{"op":"joined","room":"sales","id":1}`, `{"op":"error","code":"x","message":"y"}`} {
		if got := UpdateData([]byte(frame)); got != nil {
			t.Errorf("%s: got %q", frame, got)
		}
	}
}

// FuzzValidRoom: a name is valid exactly when it matches the contract's
// pattern, and a valid name is always one literal NATS subject token, so
// no room can widen a subscription; CheckRoom agrees and explains.
func FuzzValidRoom(f *testing.F) {
	for _, s := range []string{"sales", "a", "sales-eu_1", "", "*", ">", "a.b", "a b", "销售", strings.Repeat("r", 64), strings.Repeat("r", 65), "a\x00", "sales\n"} {
		f.Add(s)
	}
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	f.Fuzz(func(t *testing.T, name string) {
		valid := ValidRoom(name)
		if valid != re.MatchString(name) {
			t.Fatalf("ValidRoom(%q) = %v, pattern says %v", name, valid, !valid)
		}
		if err := CheckRoom(name); (err == nil) != valid || (err != nil && err.Error() == "") {
			t.Fatalf("CheckRoom(%q) = %v, ValidRoom %v", name, err, valid)
		}
		if valid && strings.ContainsAny(name, ".*> \t\r\n") {
			t.Fatalf("valid room %q is not a single literal subject token", name)
		}
	})
}
