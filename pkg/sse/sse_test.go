package sse

import (
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/roomcast/roomcast/pkg/protocol"
)

// TestParseQuery: what a stream request may say, and the 400 for what it
// may not.
func TestParseQuery(t *testing.T) {
	t.Parallel()
	join := func(room string) protocol.Command { return protocol.Command{Op: protocol.OpJoin, Room: room} }
	since := func(room string, seq uint64) protocol.Command {
		c := join(room)
		c.Since, c.HasSince = seq, true
		return c
	}
	tests := []struct {
		name   string
		query  string
		lastID string
		want   []protocol.Command
		bad    bool
	}{
		{"one room", "rooms=sales", "", []protocol.Command{join("sales")}, false},
		{"two rooms, a duplicate", "rooms=sales,visitors,sales", "", []protocol.Command{join("sales"), join("visitors")}, false},
		{"since of the only room", "rooms=sales&since=41", "", []protocol.Command{since("sales", 41)}, false},
		{"since per room", "rooms=sales,visitors&since=sales:41,visitors:7", "", []protocol.Command{since("sales", 41), since("visitors", 7)}, false},
		{"since for some rooms only", "rooms=sales,visitors&since=visitors:7,other:3", "", []protocol.Command{join("sales"), since("visitors", 7)}, false},
		{"Last-Event-ID wins over since", "rooms=sales,visitors&since=sales:1", "sales:41,visitors:7", []protocol.Command{since("sales", 41), since("visitors", 7)}, false},
		{"history count", "rooms=sales&history=50", "", []protocol.Command{{Op: protocol.OpJoin, Room: "sales", HistoryCount: 50}}, false},
		{"history age", "rooms=sales&history=5m", "", []protocol.Command{{Op: protocol.OpJoin, Room: "sales", HistoryAge: 5 * time.Minute}}, false},
		{"a resumed room ignores history", "rooms=sales,visitors&history=10", "sales:4", []protocol.Command{since("sales", 4), {Op: protocol.OpJoin, Room: "visitors", HistoryCount: 10}}, false},

		{"no rooms", "", "", nil, true},
		{"empty rooms", "rooms=", "", nil, true},
		{"bad room name", "rooms=sales,bad%20room", "", nil, true},
		{"empty name in the list", "rooms=sales,,visitors", "", nil, true},
		{"bare since with two rooms", "rooms=sales,visitors&since=41", "", nil, true},
		{"since not a number", "rooms=sales&since=x", "", nil, true},
		{"since pair not a number", "rooms=sales&since=sales:-1", "", nil, true},
		{"bad Last-Event-ID", "rooms=sales", "garbage:", nil, true},
		{"history zero", "rooms=sales&history=0", "", nil, true},
		{"history too old", "rooms=sales&history=48h", "", nil, true},
		{"history nonsense", "rooms=sales&history=lots", "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", "/sse?"+tt.query, nil)
			if tt.lastID != "" {
				r.Header.Set("Last-Event-ID", tt.lastID)
			}
			got, err := ParseQuery(r)
			if tt.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseQuery: no query or Last-Event-ID makes the parser panic, and
// what it accepts names only valid rooms.
func FuzzParseQuery(f *testing.F) {
	f.Add("rooms=sales,visitors&since=sales:41,visitors:7", "")
	f.Add("rooms=sales&history=5m", "sales:3")
	f.Fuzz(func(t *testing.T, query, lastID string) {
		r := httptest.NewRequest("GET", "/sse", nil)
		r.URL.RawQuery = query
		r.Header.Set("Last-Event-ID", lastID)
		cmds, err := ParseQuery(r)
		if err != nil {
			return
		}
		if len(cmds) == 0 {
			t.Fatal("accepted a stream of no rooms")
		}
		for _, c := range cmds {
			if protocol.CheckRoom(c.Room) != nil {
				t.Fatalf("accepted room %q", c.Room)
			}
		}
	})
}
