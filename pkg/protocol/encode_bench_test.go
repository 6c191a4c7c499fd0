package protocol

import (
	"bytes"
	"testing"
)

// BenchmarkEncodeOnce is what the gateway does once per update, whatever
// the number of clients: validate and compact the producer's payload,
// then append the update frame around it.
func BenchmarkEncodeOnce(b *testing.B) {
	payload := []byte(`{"ts":1764124800000,"timestamp":"03:20:00","sales":4211.5,"orders":117}`)
	var scratch bytes.Buffer
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		scratch.Reset()
		if err := CompactPayload(&scratch, payload); err != nil {
			b.Fatal(err)
		}
		dst = AppendUpdate(dst[:0], Update{Room: "sales", Seq: 4242, Prev: 4238, Data: scratch.Bytes()})
	}
}
