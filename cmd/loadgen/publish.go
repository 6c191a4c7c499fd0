package main

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// publisher is the producer: every 1/hz it publishes one update to every
// room, stamped with ts (unix ms, the product's convention) and tsn (unix
// ns, for sub-millisecond latencies on this machine's single clock). All
// rooms go out in the same instant (one tick, as one producer feeding every
// room does), or, with stagger, room i at i/rooms of the interval, evenly
// spread as independent producers would be.
type publisher struct {
	nc       *nats.Conn
	subjects []string
	hz       float64
	stagger  bool
	size     int
	pubs     []atomic.Uint64 // updates published per room since the last reset
}

func newPublisher(cfg *Config) (*publisher, error) {
	nc, err := nats.Connect(cfg.NATS, nats.Name("roomcast-loadgen"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	p := &publisher{nc: nc, hz: cfg.Hz, stagger: cfg.Stagger, size: cfg.Payload, pubs: make([]atomic.Uint64, cfg.Rooms)}
	for i := range cfg.Rooms {
		p.subjects = append(p.subjects, cfg.Prefix+"."+roomName(i))
	}
	return p, nil
}

func (p *publisher) reset() {
	for i := range p.pubs {
		p.pubs[i].Store(0)
	}
}

// published returns the updates published per room since the last reset.
func (p *publisher) published() []uint64 {
	out := make([]uint64, len(p.pubs))
	for i := range p.pubs {
		out[i] = p.pubs[i].Load()
	}
	return out
}

// run publishes until ctx ends, then flushes and closes the connection.
func (p *publisher) run(ctx context.Context) {
	defer p.nc.Close()
	slots := 1 // publishing instants per interval
	if p.stagger {
		slots = len(p.subjects)
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / p.hz / float64(slots)))
	defer tick.Stop()
	var buf []byte
	n := uint64(1) // the interval's number, in every room's updates
	for slot := 0; ; slot++ {
		if slot == slots {
			slot = 0
			n++
		}
		first, last := 0, len(p.subjects)
		if p.stagger {
			first, last = slot, slot+1
		}
		now := time.Now()
		for i := first; i < last; i++ {
			buf = p.payload(buf[:0], now, n)
			_ = p.nc.Publish(p.subjects[i], buf) // copied into nats.go's buffer
		}
		_ = p.nc.Flush()
		for i := first; i < last; i++ {
			p.pubs[i].Add(1)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// payload looks like a dashboard update, padded to about p.size bytes.
func (p *publisher) payload(b []byte, now time.Time, n uint64) []byte {
	b = append(b, `{"ts":`...)
	b = strconv.AppendInt(b, now.UnixMilli(), 10)
	b = append(b, `,"tsn":`...)
	b = strconv.AppendInt(b, now.UnixNano(), 10)
	b = append(b, `,"n":`...)
	b = strconv.AppendUint(b, n, 10)
	b = append(b, `,"value":`...)
	b = strconv.AppendUint(b, 1000+n%4000, 10)
	b = append(b, `,"pad":"`...)
	for len(b) < p.size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}
