package roomtest

import (
	"encoding/json"
	"testing"
)

// TestParseUpdate: the fast path reads what the JSON decoder would, and
// declines what it does not know.
func TestParseUpdate(t *testing.T) {
	for _, line := range []string{
		`{"op":"update","room":"sales","seq":42,"prev":38,"data":{"ts":1764124800000,"sales":4211}}`,
		`{"op":"update","room":"s","seq":9,"prev":0,"missed":true,"data":{"n":{"ts":5}}}`,
		`{"op":"update","room":"s","seq":9,"data":{}}`,
		`{"op":"update","room":"s","seq":1,"prev":0,"data":{"x":"\"ts\":7","ts":12}}`,
	} {
		u, ok := parseUpdate([]byte(line))
		if !ok {
			t.Fatalf("%s: not parsed", line)
		}
		var m Msg
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if u.room != m.Room || u.seq != m.Seq || u.missed != m.Missed || u.hasPrev != (m.Prev != nil) || (m.Prev != nil && u.prev != *m.Prev) {
			t.Errorf("%s: got %+v", line, u)
		}
	}
	for _, line := range []string{`{"op":"joined","room":"s"}`, `{"room":"s","op":"update","seq":1,"data":{}}`, `{"op":"update","room":"s","seq":x}`} {
		if _, ok := parseUpdate([]byte(line)); ok {
			t.Errorf("%s: parsed", line)
		}
	}
}
