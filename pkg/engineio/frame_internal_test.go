package engineio

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// TestWriteFrame: every length encoding (7-bit, 16-bit, 64-bit), with and
// without the packet type character, comes out as one final unmasked
// frame.
func TestWriteFrame(t *testing.T) {
	for _, n := range []int{0, 1, 124, 125, 126, 65534, 65535, 65536, 100000} {
		for _, typ := range []byte{0, '4'} {
			data := bytes.Repeat([]byte{'x'}, n)
			a, b := net.Pipe()
			errc := make(chan error, 1)
			go func() { errc <- writeFrame(a, opText, typ, data, time.Now().Add(5*time.Second)) }()
			_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
			hdr := make([]byte, 2)
			if _, err := io.ReadFull(b, hdr); err != nil {
				t.Fatal(err)
			}
			if hdr[0] != 0x81 || hdr[1]&0x80 != 0 {
				t.Fatalf("n=%d: header %x, want a final unmasked text frame", n, hdr)
			}
			length := uint64(hdr[1])
			switch length {
			case 126:
				ext := make([]byte, 2)
				_, _ = io.ReadFull(b, ext)
				length = uint64(binary.BigEndian.Uint16(ext))
			case 127:
				ext := make([]byte, 8)
				_, _ = io.ReadFull(b, ext)
				length = binary.BigEndian.Uint64(ext)
			}
			want := append([]byte(nil), data...)
			if typ != 0 {
				want = append([]byte{typ}, data...)
			}
			if length != uint64(len(want)) {
				t.Fatalf("n=%d typ=%q: length %d, want %d", n, typ, length, len(want))
			}
			got := make([]byte, length)
			if _, err := io.ReadFull(b, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("n=%d typ=%q: payload differs", n, typ)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			a.Close()
			b.Close()
		}
	}
}
