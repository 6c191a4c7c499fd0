package protocol

import (
	"reflect"
	"strings"
	"testing"
)

// TestDecodeFast checks which frames the fast decoder takes and that what
// it takes it decodes as encoding/json does.
func TestDecodeFast(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame string
		ok    bool // taken by the fast path
	}{
		{"join", `{"op":"join","room":"sales"}`, true},
		{"leave", `{"op":"leave","room":"visitors"}`, true},
		{"join id since", `{"op":"join","room":"sales","id":17,"since":41}`, true},
		{"members reordered", `{"since":41,"id":-3,"room":"s","op":"join"}`, true},
		{"history count", `{"op":"join","room":"s","history":300}`, true},
		{"history age", `{"op":"join","room":"s","history":"5m"}`, true},
		{"id string", `{"op":"join","room":"s","id":"7"}`, true},
		{"id zero", `{"op":"join","room":"s","id":0}`, true},
		{"id minus zero", `{"op":"join","room":"s","id":-0}`, true},
		{"id huge", `{"op":"join","room":"s","id":99999999999999999999}`, true},
		{"unknown op", `{"op":"publish","room":"s"}`, true},
		{"empty op", `{"op":"","room":"s"}`, true},
		{"room with space", `{"op":"join","room":"a b ~"}`, true},
		{"room >", `{"op":"join","room":">"}`, true},
		{"empty object", `{}`, true},
		{"empty object spaced", " \t{ \r\n} \n", true},
		{"only op", `{"op":"join"}`, true},
		{"whitespace everywhere", " {\n\t\"op\" : \"join\" ,\r\n \"room\"\t:\"s\" , \"id\" : 5 }\n ", true},

		{"empty", ``, false},
		{"blank", " \n", false},
		{"array", `["join"]`, false},
		{"string", `"join"`, false},
		{"unterminated", `{"op":"join"`, false},
		{"unterminated string", `{"op":"jo`, false},
		{"no colon", `{"op" "join"}`, false},
		{"no value", `{"op":}`, false},
		{"trailing comma", `{"op":"join",}`, false},
		{"leading comma", `{,"op":"join"}`, false},
		{"trailing object", `{"op":"join","room":"a"}{}`, false},
		{"trailing byte", `{"op":"join","room":"a"}x`, false},
		{"two lines", "{\"op\":\"join\",\"room\":\"s\"}\n{\"op\":\"leave\",\"room\":\"s\"}", false},
		{"capital key", `{"Op":"join","room":"s"}`, false},
		{"upper key", `{"op":"join","ROOM":"s"}`, false},
		{"unknown key", `{"op":"join","room":"s","x":1}`, false},
		{"escaped key", `{"\u006fp":"join","room":"s"}`, false},
		{"duplicate op", `{"op":"join","op":"leave","room":"s"}`, false},
		{"duplicate room", `{"op":"join","room":"a","room":"b"}`, false},
		{"duplicate id", `{"op":"join","room":"s","id":1,"id":2}`, false},
		{"escape in value", `{"op":"join","room":"s\"x"}`, false},
		{"unicode escape", `{"op":"j\u006fin","room":"s"}`, false},
		{"utf-8", `{"op":"join","room":"销售"}`, false},
		{"invalid utf-8", "{\"op\":\"join\",\"room\":\"\xff\"}", false},
		{"control byte", "{\"op\":\"join\",\"room\":\"a\tb\"}", false},
		{"DEL", "{\"op\":\"join\",\"room\":\"a\x7fb\"}", false},
		{"op number", `{"op":1,"room":"s"}`, false},
		{"room number", `{"op":"join","room":5}`, false},
		{"null", `{"op":"join","room":"s","id":null}`, false},
		{"true", `{"op":"join","room":"s","id":true}`, false},
		{"object value", `{"op":"join","room":"s","history":{"n":1}}`, false},
		{"array value", `{"op":"join","room":"s","since":[1]}`, false},
		{"fraction", `{"op":"join","room":"s","id":1.5}`, false},
		{"exponent", `{"op":"join","room":"s","id":1e3}`, false},
		{"leading zero", `{"op":"join","room":"s","id":01}`, false},
		{"plus", `{"op":"join","room":"s","id":+1}`, false},
		{"minus only", `{"op":"join","room":"s","id":-}`, false},
		{"form feed", "{\"op\":\"join\",\f\"room\":\"s\"}", false},
		{"nbsp", "{\"op\":\"join\",\u00a0\"room\":\"s\"}", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := decodeFast([]byte(tt.frame))
			if ok != tt.ok {
				t.Fatalf("decodeFast(%q) ok = %v, want %v", tt.frame, ok, tt.ok)
			}
			if !ok {
				if !reflect.DeepEqual(got, wireCommand{}) {
					t.Fatalf("decodeFast(%q) gave up but returned %+v", tt.frame, got)
				}
				return
			}
			want, perr := decodeJSON([]byte(tt.frame))
			if perr != nil {
				t.Fatalf("decodeFast took %q, which encoding/json refuses: %v", tt.frame, perr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decodeFast(%q) = %s, encoding/json: %s", tt.frame, showWire(got), showWire(want))
			}
		})
	}
}

func showWire(w wireCommand) string {
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return "`" + *p + "`"
	}
	raw := func(r []byte) string {
		if r == nil {
			return "<nil>"
		}
		return "`" + string(r) + "`"
	}
	return "{op:" + str(w.Op) + " room:" + str(w.Room) + " id:" + raw(w.ID) +
		" since:" + raw(w.Since) + " history:" + raw(w.History) + "}"
}

// TestDecodeFastAllocs keeps the fast path cheap: a join or leave costs
// the room string and the box that holds it, nothing for the op.
func TestDecodeFastAllocs(t *testing.T) {
	frame := []byte(`{"op":"join","room":"sales","id":17,"since":41}`)
	if n := testing.AllocsPerRun(100, func() {
		if _, perr := ParseCommand(frame); perr != nil {
			t.Fatal(perr)
		}
	}); n > 2 {
		t.Fatalf("ParseCommand of a join: %v allocations, want at most 2", n)
	}
}

// FuzzParseCommandFast checks that the fast path changes nothing: for any
// frame, ParseCommand returns what the encoding/json path returns.
func FuzzParseCommandFast(f *testing.F) {
	for _, s := range []string{
		// FuzzParseCommand's seeds.
		`{"op":"join","room":"sales","id":1}`,
		`{"op":"leave","room":"visitors"}`,
		`{"op":"join","room":"s","since":41}`,
		`{"op":"join","room":">"}`,
		`{"id":"x"}`, `[]`, `{`, ``, "\xff",
		// Tricky ones.
		`{"OP":"join","Room":"s"}`,
		`{"op":"join","oP":"leave","room":"s"}`,
		`{"op":"join","room":"a","room":"b"}`,
		`{"op":"join","room":"s","id":1,"id":"x"}`,
		`{"op":"join","room":"s\u0041"}`,
		`{"op":"join","room":"a\"b"}`,
		`{"op":"join","room":"销售"}`,
		"{\"op\":\"join\",\"room\":\"\xffs\"}",
		`{"op":"join","room":"s","id":1e2}`,
		`{"op":"join","room":"s","since":1.0}`,
		`{"op":"join","room":"s","since":-0}`,
		`{"op":"join","room":"s","id":007}`,
		`{"op":"join","room":"s","history":"90s"}`,
		`{"op":"join","room":"s","history":100000}`,
		`{"op":"join","room":"s","history":null}`,
		" \t\r\n{ \"op\" :\"leave\" , \"room\":\"s\" }\r\n",
		"{\"op\":\"join\",\f\"room\":\"s\"}",
		`{"op":"join","room":"a"}x`,
		`{"op":"join","room":"a"}{}`,
		`{"op":"join","room":"s","history":{"n":[1,{}]}}`,
		`{"op":"join","room":"s","x":{"op":"leave"}}`,
		`{"op":1,"room":2}`,
		`{}`, `{,}`, `{"op":"join",}`,
		`{"op":"join","room":"` + strings.Repeat("x", 65) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		cmd, perr := ParseCommand(frame)
		wantCmd, wantErr := parseCommandSlow(frame)
		if cmd != wantCmd || !reflect.DeepEqual(perr, wantErr) {
			t.Fatalf("ParseCommand(%q) = %+v, %+v; encoding/json path: %+v, %+v", frame, cmd, perr, wantCmd, wantErr)
		}
	})
}
