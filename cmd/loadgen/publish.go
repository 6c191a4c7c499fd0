package main

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// publisher is the producer: every tick it publishes one update to every
// room, stamped with ts (unix ms, the product's convention) and tsn (unix
// ns, for sub-millisecond latencies on this machine's single clock).
type publisher struct {
	nc       *nats.Conn
	subjects []string
	hz       float64
	size     int
	ticks    atomic.Uint64 // ticks published since the last reset
}

func newPublisher(cfg *Config) (*publisher, error) {
	nc, err := nats.Connect(cfg.NATS, nats.Name("roomcast-loadgen"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	p := &publisher{nc: nc, hz: cfg.Hz, size: cfg.Payload}
	for i := range cfg.Rooms {
		p.subjects = append(p.subjects, cfg.Prefix+"."+roomName(i))
	}
	return p, nil
}

// run publishes until ctx ends, then flushes and closes the connection.
func (p *publisher) run(ctx context.Context) {
	defer p.nc.Close()
	tick := time.NewTicker(time.Duration(float64(time.Second) / p.hz))
	defer tick.Stop()
	var buf []byte
	for n := uint64(1); ; n++ {
		now := time.Now()
		for _, subj := range p.subjects {
			buf = p.payload(buf[:0], now, n)
			_ = p.nc.Publish(subj, buf) // copied into nats.go's buffer
		}
		_ = p.nc.Flush()
		p.ticks.Add(1)
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
