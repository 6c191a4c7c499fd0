package wsread

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// clientFrame encodes a client frame: masked, with the given first byte
// (FIN, RSV, opcode).
func clientFrame(b0 byte, payload []byte) []byte {
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n < 1<<16:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := []byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i&3])
	}
	return out
}

func deflated(s string) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, 1)
	_, _ = w.Write([]byte(s))
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0x00, 0x00, 0xff, 0xff})
}

type event struct {
	op      byte
	payload string
}

// run feeds in to a reader in chunks of size step (0: all at once) and
// returns what it emitted and the close code of its error (0: none).
func run(in []byte, step int, deflate bool) ([]event, int) {
	r := Reader{MaxMessage: 4096, Deflate: deflate}
	var got []event
	emit := func(op byte, p []byte) error {
		got = append(got, event{op, string(p)})
		return nil
	}
	if step == 0 {
		step = len(in) + 1
	}
	data := bytes.Clone(in)
	for i := 0; i < len(data); i += step {
		chunk := bytes.Clone(data[i:min(i+step, len(data))])
		if err := r.Feed(chunk, emit); err != nil {
			var fe *FrameError
			if errors.As(err, &fe) {
				return got, fe.Code
			}
			return got, -1
		}
	}
	return got, 0
}

func TestFrameReader(t *testing.T) {
	join := `{"op":"join","room":"sales"}`
	big := strings.Repeat("x", 5000)
	tests := []struct {
		name    string
		in      []byte
		deflate bool
		want    []event
		code    int
	}{
		{"text", clientFrame(0x81, []byte(join)), false, []event{{OpText, join}}, 0},
		{"two in one read", append(clientFrame(0x81, []byte("a")), clientFrame(0x81, []byte("b"))...), false, []event{{OpText, "a"}, {OpText, "b"}}, 0},
		{"16-bit length", clientFrame(0x81, []byte(strings.Repeat("y", 300))), false, []event{{OpText, strings.Repeat("y", 300)}}, 0},
		{"fragmented with a ping inside", bytes.Join([][]byte{clientFrame(0x01, []byte("ab")), clientFrame(0x89, []byte("p")), clientFrame(0x80, []byte("cd"))}, nil), false,
			[]event{{OpPing, "p"}, {OpText, "abcd"}}, 0},
		{"pong and close", append(clientFrame(0x8A, nil), clientFrame(0x88, []byte{0x03, 0xE8})...), false, []event{{OpPong, ""}, {OpClose, "\x03\xe8"}}, 0},
		{"binary is passed on", clientFrame(0x82, []byte{0, 1, 2}), false, []event{{OpBinary, "\x00\x01\x02"}}, 0},
		{"compressed", clientFrame(0xC1, deflated(join)), true, []event{{OpText, join}}, 0},
		{"compressed fragments", append(clientFrame(0x41, deflated(join)[:3]), clientFrame(0x80, deflated(join)[3:])...), true, []event{{OpText, join}}, 0},
		{"unmasked", []byte{0x81, 0x01, 'a'}, false, nil, 1002},
		{"reserved bit", clientFrame(0xA1, []byte("a")), false, nil, 1002},
		{"RSV1 without deflate", clientFrame(0xC1, deflated(join)), false, nil, 1002},
		{"unknown opcode", clientFrame(0x83, []byte("a")), false, nil, 1002},
		{"continuation first", clientFrame(0x80, []byte("a")), false, nil, 1002},
		{"text inside fragments", append(clientFrame(0x01, []byte("a")), clientFrame(0x81, []byte("b"))...), false, nil, 1002},
		{"fragmented ping", clientFrame(0x09, []byte("a")), false, nil, 1002},
		{"long ping", clientFrame(0x89, bytes.Repeat([]byte("a"), 126)), false, nil, 1002},
		{"too large", clientFrame(0x81, []byte(big)), false, nil, 1009},
		{"too large across fragments", append(clientFrame(0x01, []byte(big[:3000])), clientFrame(0x80, []byte(big[:3000]))...), false, nil, 1009},
		{"64-bit length claim", []byte{0x81, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, false, nil, 1009},
		{"compression bomb", clientFrame(0xC1, deflated(strings.Repeat("z", 1<<20))), true, nil, 1009},
		{"bad compressed data", clientFrame(0xC1, []byte{0xff, 0xff, 0xff}), true, nil, 1007},
		{"invalid UTF-8", clientFrame(0x81, []byte{'"', 0xc3, 0x28, '"'}), false, nil, 1007},
		{"partial frame waits", clientFrame(0x81, []byte(join))[:10], false, nil, 0},
	}
	for _, tt := range tests {
		for _, step := range []int{0, 1, 7} {
			t.Run(fmt.Sprintf("%s/step=%d", tt.name, step), func(t *testing.T) {
				got, code := run(tt.in, step, tt.deflate)
				if code != tt.code {
					t.Fatalf("close code %d, want %d", code, tt.code)
				}
				if tt.code == 0 && fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Fatalf("got %q, want %q", got, tt.want)
				}
			})
		}
	}
}

// TestFrameReaderKeepsNoBuffer: between messages an idle reader holds no
// buffer, which is what makes an idle connection cheap.
func TestFrameReaderKeepsNoBuffer(t *testing.T) {
	r := Reader{MaxMessage: 4096}
	in := clientFrame(0x81, []byte(strings.Repeat("q", 3000)))
	emit := func(byte, []byte) error { return nil }
	if err := r.Feed(bytes.Clone(in[:100]), emit); err != nil {
		t.Fatal(err)
	}
	if err := r.Feed(bytes.Clone(in[100:]), emit); err != nil {
		t.Fatal(err)
	}
	if len(r.buf) != 0 || r.msg != nil {
		t.Fatalf("idle reader holds %d + %d bytes", len(r.buf), len(r.msg))
	}
}

// FuzzFrameReader: any input, split anywhere, gives the same messages
// and the same verdict as the input in one piece, never panics, and never
// emits a message over the limit or text that is not UTF-8.
func FuzzFrameReader(f *testing.F) {
	f.Add(clientFrame(0x81, []byte(`{"op":"join","room":"sales"}`)), uint8(3), false)
	f.Add(append(clientFrame(0x01, []byte("ab")), clientFrame(0x80, []byte("cd"))...), uint8(1), false)
	f.Add(clientFrame(0xC1, deflated("hello hello hello")), uint8(5), true)
	f.Add([]byte{0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0x10, 0}, uint8(2), false)
	f.Add(clientFrame(0x88, []byte{0x03, 0xE8, 'b', 'y', 'e'}), uint8(4), false)
	f.Fuzz(func(t *testing.T, in []byte, step uint8, deflate bool) {
		whole, wholeCode := run(in, 0, deflate)
		split, splitCode := run(in, int(step%16)+1, deflate)
		if wholeCode != splitCode || fmt.Sprint(whole) != fmt.Sprint(split) {
			t.Fatalf("whole: %q %d; split by %d: %q %d", whole, wholeCode, step%16+1, split, splitCode)
		}
		for _, e := range whole {
			if len(e.payload) > 4096 {
				t.Fatalf("message of %d bytes over the limit", len(e.payload))
			}
		}
	})
}
