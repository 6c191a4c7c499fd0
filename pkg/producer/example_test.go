package producer_test

import (
	"context"
	"log"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/producer"
)

// A producer for a new room: connect, announce the room so that
// dashboards show it, publish updates.
func Example() {
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	p, err := producer.New(nc, producer.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = p.Announce(ctx, catalog.Entry{
		Room: "orders",
		// A title or label is one string, or one per language.
		Title: catalog.Text{"en": "Orders", "zh": "订单"},
		Metrics: []catalog.Metric{
			{Key: "open", Label: catalog.Plain("Open orders")},
			{Key: "value", Label: catalog.Plain("Order value"), Unit: catalog.Plain("EUR"), Format: catalog.FormatMoney, Currency: "EUR"},
		},
		IntervalMS: 5000,
	})
	if err != nil {
		log.Fatal(err)
	}
	// Adds "ts" (unix milliseconds) and publishes to roomcast.room.orders.
	if err := p.Publish("orders", map[string]any{"open": 12, "value": 3410.5}); err != nil {
		log.Fatal(err)
	}
}
