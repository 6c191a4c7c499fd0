package socketio

import "testing"

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		ok   bool
		typ  byte
		nsp  string
		id   int64
		att  int
		data string
	}{
		{"0", true, typeConnect, "/", 0, 0, ""},
		{`0{"token":"1"}`, true, typeConnect, "/", 0, 0, `{"token":"1"}`},
		{"0/custom,", true, typeConnect, "/custom", 0, 0, ""},
		{"0/custom", true, typeConnect, "/custom", 0, 0, ""},
		{`0/custom,{"a":1}`, true, typeConnect, "/custom", 0, 0, `{"a":1}`},
		{"1", true, typeDisconnect, "/", 0, 0, ""},
		{"1/custom,", true, typeDisconnect, "/custom", 0, 0, ""},
		{`2["join",{"room":"sales"}]`, true, typeEvent, "/", 0, 0, `["join",{"room":"sales"}]`},
		{`212["join"]`, true, typeEvent, "/", 12, 0, `["join"]`},
		{`2/custom,7["x"]`, true, typeEvent, "/custom", 7, 0, `["x"]`},
		{`3456[1]`, true, typeAck, "/", 456, 0, `[1]`},
		{`52-["m",{"_placeholder":true,"num":0}]`, true, typeBinaryEvent, "/", 0, 2, `["m",{"_placeholder":true,"num":0}]`},
		{`61-9[{"_placeholder":true,"num":0}]`, true, typeBinaryAck, "/", 9, 1, `[{"_placeholder":true,"num":0}]`},
		{"", false, 0, "", 0, 0, ""},
		{"abc", false, 0, "", 0, 0, ""},
		{"7", false, 0, "", 0, 0, ""},
		{"2{}", false, 0, "", 0, 0, ""},
		{"2[]", false, 0, "", 0, 0, ""},
		{"2[1]", false, 0, "", 0, 0, ""},
		{`2abc["x"]`, false, 0, "", 0, 0, ""},
		{`2["x"`, false, 0, "", 0, 0, ""},
		{`21234567890123456["x"]`, false, 0, "", 0, 0, ""},
		{"0[1]", false, 0, "", 0, 0, ""},
		{`1{"a":1}`, false, 0, "", 0, 0, ""},
		{"3[1]", false, 0, "", 0, 0, ""},
		{"31{}", false, 0, "", 0, 0, ""},
		{`4{"message":"x"}`, false, 0, "", 0, 0, ""},
		{`5-["x"]`, false, 0, "", 0, 0, ""},
		{`5x-["x"]`, false, 0, "", 0, 0, ""},
		{`599-["x"]`, false, 0, "", 0, 0, ""},
		{`50-["x"]`, false, 0, "", 0, 0, ""},
	}
	for _, tt := range tests {
		p, err := decode([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("%q: err %v, want ok %v", tt.in, err, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		if p.Type != tt.typ || p.Nsp != tt.nsp || p.ID != tt.id || p.HasID != (tt.id != 0) || p.Attachments != tt.att || string(p.Data) != tt.data {
			t.Errorf("%q: got %+v", tt.in, p)
		}
	}
}

func TestAppendHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ  byte
		att  int
		nsp  string
		id   int64
		has  bool
		want string
	}{
		{typeConnect, 0, "/", 0, false, "0"},
		{typeConnectError, 0, "/random", 0, false, "4/random,"},
		{typeAck, 0, "/", 12, true, "312"},
		{typeBinaryAck, 2, "/custom", 789, true, "62-/custom,789"},
	}
	for _, tt := range tests {
		if got := string(appendHeader(nil, tt.typ, tt.att, tt.nsp, tt.id, tt.has)); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
