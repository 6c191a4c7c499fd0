package broker_test

import (
	"testing"

	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/broker"
)

// BenchmarkSubscribeUnsubscribe measures what a room's first join and last
// leave cost in NATS, on a real server: subscribe to the room's subject
// and unsubscribe again. A flush every 64 pairs makes them reach the
// server, so the figure includes the server's interest bookkeeping (on
// another goroutine of this process), not only queueing protocol lines.
func BenchmarkSubscribeUnsubscribe(b *testing.B) {
	for _, live := range []string{"", "roomcast.live"} {
		name := map[string]string{"": "plain", "roomcast.live": "history"}[live]
		b.Run(name, func(b *testing.B) {
			nc := roomtest.Connect(b, roomtest.StartNATS(b))
			rooms, err := broker.NewRooms(nc, "roomcast.room", live)
			if err != nil {
				b.Fatal(err)
			}
			deliver := func(broker.Delivery) {}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				sub, err := rooms.Subscribe("sales", deliver)
				if err != nil {
					b.Fatal(err)
				}
				if err := sub.Unsubscribe(); err != nil {
					b.Fatal(err)
				}
				if i%64 == 63 {
					if err := nc.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := nc.Flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
