package engineio

import (
	"bytes"
	"testing"
)

// FuzzDecodePayload: a long-polling body never panics the decoder, and a
// body that decodes encodes back to itself.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{"4hello", "4a\x1e4b", "bAQIDBA==", "4hello\x1ebAQIDBA==", "3", "abc", "", "\x1e", "b", "6\x1e1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		packets, err := decodePayload(body)
		if err != nil {
			return
		}
		if again := appendPayload(nil, packets); !bytes.Equal(again, body) {
			// Base64 has several spellings of the same bytes (padding
			// bits); compare decoded packets then.
			p2, err := decodePayload(again)
			if err != nil || len(p2) != len(packets) {
				t.Fatalf("%q re-encodes to %q", body, again)
			}
			for i := range p2 {
				if p2[i].Type != packets[i].Type || !bytes.Equal(p2[i].Data, packets[i].Data) {
					t.Fatalf("%q re-encodes to %q", body, again)
				}
			}
		}
	})
}
