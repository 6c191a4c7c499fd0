package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/roomcast/roomcast/pkg/broker"
)

// Store is a gateway's view of the catalogue, kept current by Run.
type Store struct {
	bucket   string
	replicas int // for a bucket Run has to create
	log      *slog.Logger

	mu      sync.Mutex
	entries map[string]Entry
	version uint64 // changes whenever entries change
	synced  bool   // the bucket's stored entries have all been read
}

// Synced reports whether the store has read every stored entry (or, with
// no JetStream, started following announcements).
func (s *Store) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

func (s *Store) setSynced(v bool) {
	s.mu.Lock()
	s.synced = v
	s.mu.Unlock()
}

// NewStore returns an empty store for bucket.
//
// replicas is used if the bucket has to be created (history.replicas).
func NewStore(bucket string, replicas int, log *slog.Logger) *Store {
	return &Store{bucket: bucket, replicas: replicas, log: log, entries: make(map[string]Entry)}
}

// List returns the entries sorted by room, and a version that changes
// whenever the list does. The version is local to this store: use a hash
// of the list where it must agree across gateways (an ETag).
func (s *Store) List() ([]Entry, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Room, b.Room) })
	return out, s.version
}

func (s *Store) put(room string, data []byte) {
	e, err := Parse(room, data)
	if err != nil {
		s.log.Warn("ignored catalogue entry", "room", room, "err", err)
		return
	}
	s.mu.Lock()
	if old, ok := s.entries[room]; !ok || !reflect.DeepEqual(old, e) {
		s.entries[room] = e
		s.version++
	}
	s.mu.Unlock()
}

func (s *Store) remove(room string) {
	s.mu.Lock()
	if _, ok := s.entries[room]; ok {
		delete(s.entries, room)
		s.version++
	}
	s.mu.Unlock()
}

var errNoJetStream = errors.New("NATS has no JetStream")

// Run keeps the store current until ctx ends. It watches the bucket
// (creating it if missing) and retries with backoff while NATS is not
// reachable. Without JetStream it follows announcements on core NATS,
// checking every minute whether JetStream has become available. It returns
// nil when ctx ends.
func (s *Store) Run(ctx context.Context, nc *nats.Conn) error {
	backoff := time.Second
	warned := false
	for {
		err := s.watch(ctx, nc)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errNoJetStream) {
			if !warned {
				s.log.Warn("NATS has no JetStream: the room catalogue is learnt from live announcements only", "subject", Subject(s.bucket, "*"))
				warned = true
			}
			if err := s.follow(ctx, nc, time.Minute); err != nil {
				s.log.Warn("room catalogue follow failed", "err", err)
			}
			backoff = time.Second
			continue
		}
		s.log.Warn("room catalogue watch failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (s *Store) watch(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := openBucket(ctx, js, s.bucket, s.replicas)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", s.bucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("catalogue watcher stopped")
			}
			if e == nil {
				s.setSynced(true) // the initial values have all been delivered
				continue
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				s.put(e.Key(), e.Value())
			default:
				s.remove(e.Key())
			}
		}
	}
}

// openBucket returns the catalogue bucket, creating it if it does not
// exist. An existing bucket is used as it is, so an operator may create it
// with other settings (replicas, say).
func openBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:       bucket,
			Description:  "roomcast room catalogue: one key per room",
			History:      1,
			MaxValueSize: MaxEntryBytes,
			Replicas:     max(replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if broker.IsNoJetStream(err) {
		return nil, errNoJetStream
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// follow learns entries from announcements on core NATS for d, or until
// ctx ends.
func (s *Store) follow(ctx context.Context, nc *nats.Conn, d time.Duration) error {
	prefix := Subject(s.bucket, "")
	sub, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		room := strings.TrimPrefix(m.Subject, prefix)
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			s.remove(room)
			return
		}
		s.put(room, m.Data)
	})
	if err != nil {
		return fmt.Errorf("follow catalogue: %w", err)
	}
	s.setSynced(true)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return sub.Unsubscribe()
}

// Announce stores a room's entry in the catalogue bucket, creating the
// bucket if it is missing, so that the entry is kept whichever of producer
// and gateways starts first. Without JetStream it is a plain publish on
// the same subject, which running gateways follow. Producers call it at
// start and then periodically.
//
// replicas is used if the bucket has to be created: history.replicas, so
// that the catalogue survives a node's loss as the history does.
func Announce(ctx context.Context, nc *nats.Conn, bucket string, replicas int, e Entry) error {
	if e.Metrics == nil {
		e.Metrics = []Metric{}
	}
	if err := e.Validate(); err != nil {
		return fmt.Errorf("catalogue entry for %q: %w", e.Room, err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := openBucket(ctx, js, bucket, replicas)
	switch {
	case errors.Is(err, errNoJetStream):
		return nc.Publish(Subject(bucket, e.Room), data)
	case err != nil:
		return fmt.Errorf("announce %q: %w", e.Room, err)
	}
	if _, err := kv.Put(ctx, e.Room, data); err != nil {
		return fmt.Errorf("announce %q: %w", e.Room, err)
	}
	return nil
}
