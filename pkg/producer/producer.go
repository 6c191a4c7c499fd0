// Package producer publishes room updates and announces rooms: what a
// program needs to feed roomcast dashboards. A new producer is a few lines:
//
//	nc, _ := nats.Connect("nats://127.0.0.1:4222")
//	p, _ := producer.New(nc, producer.Options{})
//	_ = p.Announce(ctx, catalog.Entry{Room: "orders", Title: catalog.Plain("Orders"),
//		Metrics: []catalog.Metric{{Key: "open", Label: catalog.Plain("Open orders")}}})
//	_ = p.Publish("orders", map[string]any{"open": 12})
//
// The package also runs the generated rooms of config.yaml (Run) and pipes
// JSON lines from a reader (PublishLines), for cmd/producer and the
// gateway's --demo mode.
package producer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Options name the subjects; zero values mean the defaults.
type Options struct {
	SubjectPrefix string // default protocol.DefaultSubjectPrefix
	CatalogBucket string // default catalog.DefaultBucket
	// CatalogReplicas is used if the catalogue bucket must be created
	// (history.replicas); default 1.
	CatalogReplicas int
	// Now is the clock for the ts field; default time.Now.
	Now func() time.Time
}

// Publisher publishes to one NATS connection. It is safe for concurrent
// use.
type Publisher struct {
	nc       *nats.Conn
	prefix   string
	bucket   string
	replicas int
	now      func() time.Time

	published atomic.Uint64
	errors    atomic.Uint64
}

// Stats counts a Publisher's updates since it was created.
type Stats struct {
	Published uint64 // handed to NATS
	Errors    uint64 // refused (bad room, too large) or not handed to NATS
}

// Stats returns the counts so far, for status lines and metrics.
func (p *Publisher) Stats() Stats {
	return Stats{Published: p.published.Load(), Errors: p.errors.Load()}
}

// New returns a publisher on nc, which the caller keeps owning.
func New(nc *nats.Conn, opts Options) (*Publisher, error) {
	p := &Publisher{nc: nc, prefix: opts.SubjectPrefix, bucket: opts.CatalogBucket, replicas: opts.CatalogReplicas, now: opts.Now}
	if p.prefix == "" {
		p.prefix = protocol.DefaultSubjectPrefix
	}
	if p.bucket == "" {
		p.bucket = catalog.DefaultBucket
	}
	if p.now == nil {
		p.now = time.Now
	}
	if err := protocol.CheckSubjectPrefix(p.prefix); err != nil {
		return nil, err
	}
	return p, nil
}

// Subject returns the subject updates of room are published on.
func (p *Publisher) Subject(room string) (string, error) {
	if err := protocol.CheckRoom(room); err != nil {
		return "", fmt.Errorf("room %q: %w", room, err)
	}
	return p.prefix + "." + room, nil
}

// Announce publishes the room's catalogue entry. Announce again
// periodically (Run does, every producer.announce_interval) so that
// gateways running without JetStream learn it too.
func (p *Publisher) Announce(ctx context.Context, e catalog.Entry) error {
	return catalog.Announce(ctx, p.nc, p.bucket, p.replicas, e)
}

// Publish publishes one update of room: the metrics as a JSON object, with
// "ts" (unix milliseconds, now) added unless metrics has it.
func (p *Publisher) Publish(room string, metrics map[string]any) error {
	obj := make(map[string]any, len(metrics)+1)
	for k, v := range metrics {
		obj[k] = v
	}
	if _, ok := obj["ts"]; !ok {
		obj["ts"] = p.now().UnixMilli()
	}
	data, err := json.Marshal(obj)
	if err != nil {
		p.errors.Add(1)
		return fmt.Errorf("encode update of %q: %w", room, err)
	}
	return p.publish(room, data)
}

// PublishJSON publishes one update given as a JSON object, compacted, with
// "ts" added at the front unless the object has a top-level "ts". Anything
// that is not one JSON object in valid UTF-8 is refused, because gateways
// would drop it.
func (p *Publisher) PublishJSON(room string, object []byte) error {
	var buf bytes.Buffer
	if err := protocol.CompactPayload(&buf, object); err != nil {
		p.errors.Add(1)
		return err
	}
	data := buf.Bytes()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		p.errors.Add(1)
		return err
	}
	if _, ok := top["ts"]; !ok {
		ts := `"ts":` + strconv.FormatInt(p.now().UnixMilli(), 10)
		if len(top) > 0 {
			ts += ","
		}
		data = append([]byte("{"+ts), data[1:]...)
	}
	return p.publish(room, data)
}

func (p *Publisher) publish(room string, data []byte) error {
	err := p.send(room, data)
	if err != nil {
		p.errors.Add(1)
	} else {
		p.published.Add(1)
	}
	return err
}

func (p *Publisher) send(room string, data []byte) error {
	subject, err := p.Subject(room)
	if err != nil {
		return err
	}
	if max := p.nc.MaxPayload(); max > 0 && int64(len(data)) > max {
		return fmt.Errorf("update of %q is %d bytes, NATS allows %d", room, len(data), max)
	}
	if err := p.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// Flush waits until NATS has received everything published so far.
func (p *Publisher) Flush(timeout time.Duration) error { return p.nc.FlushTimeout(timeout) }
