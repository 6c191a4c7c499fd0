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
	bucket      string
	replicas    int           // for a bucket Run has to create
	expireAfter time.Duration // 0: entries never expire
	now         func() time.Time
	log         *slog.Logger

	mu      sync.Mutex
	entries map[string]Entry
	// announced is when each entry was last put: a room whose producer
	// stopped re-announcing it is dropped expireAfter later.
	announced map[string]time.Time
	screens   map[string]Screen
	version   uint64 // changes whenever entries or screens change
	synced    bool   // the bucket's stored entries have all been read
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
// An entry not announced again within expireAfter (counted from its last
// put in the bucket, so also across gateway restarts) is no longer
// listed; 0 keeps entries until they are deleted.
func NewStore(bucket string, replicas int, expireAfter time.Duration, log *slog.Logger) *Store {
	return &Store{bucket: bucket, replicas: replicas, expireAfter: expireAfter, now: time.Now, log: log,
		entries: make(map[string]Entry), announced: make(map[string]time.Time), screens: make(map[string]Screen)}
}

// List returns the entries sorted by room, and a version that changes
// whenever the list does. The version is local to this store: use a hash
// of the list where it must agree across gateways (an ETag).
//
// Expired entries are dropped here, when someone looks, rather than by a
// timer: nothing else needs to know the moment a room dies.
func (s *Store) List() ([]Entry, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked()
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Room, b.Room) })
	return out, s.version
}

// Screens returns the screens stored in the bucket, sorted by name.
func (s *Store) Screens() []Screen {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Screen, 0, len(s.screens))
	for _, sc := range s.screens {
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b Screen) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *Store) expireLocked() {
	if s.expireAfter <= 0 {
		return
	}
	cutoff := s.now().Add(-s.expireAfter)
	for room, at := range s.announced {
		if at.Before(cutoff) {
			delete(s.entries, room)
			delete(s.announced, room)
			s.version++
			s.log.Info("room left the catalogue: not announced again", "room", room, "last_announced", at, "expire_after", s.expireAfter)
		}
	}
}

// put stores the value of key, announced at the time at.
func (s *Store) put(key string, data []byte, at time.Time) {
	if strings.HasPrefix(key, ScreenKeyPrefix) {
		s.putScreen(key, data)
		return
	}
	room := key
	e, err := Parse(room, data)
	if err != nil {
		s.log.Warn("ignored catalogue entry", "room", room, "err", err)
		return
	}
	if s.expireAfter > 0 && at.Before(s.now().Add(-s.expireAfter)) {
		// A stored entry whose producer is gone (read at start-up).
		return
	}
	s.mu.Lock()
	if old, ok := s.entries[room]; !ok || !reflect.DeepEqual(old, e) {
		s.entries[room] = e
		s.version++
	}
	s.announced[room] = at
	s.mu.Unlock()
}

func (s *Store) putScreen(key string, data []byte) {
	sc, err := ParseScreen(key, data)
	if err != nil {
		s.log.Warn("ignored catalogue screen", "key", key, "err", err)
		return
	}
	s.mu.Lock()
	if old, ok := s.screens[sc.Name]; !ok || !reflect.DeepEqual(old, sc) {
		s.screens[sc.Name] = sc
		s.version++
	}
	s.mu.Unlock()
}

func (s *Store) remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name, ok := strings.CutPrefix(key, ScreenKeyPrefix); ok {
		if _, ok := s.screens[name]; ok {
			delete(s.screens, name)
			s.version++
		}
		return
	}
	if _, ok := s.entries[key]; ok {
		delete(s.entries, key)
		delete(s.announced, key)
		s.version++
	}
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
				s.put(e.Key(), e.Value(), e.Created())
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
	handle := func(m *nats.Msg) {
		key := strings.TrimPrefix(m.Subject, prefix)
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			s.remove(key)
			return
		}
		s.put(key, m.Data, s.now())
	}
	sub, err := nc.Subscribe(prefix+"*", handle)
	if err != nil {
		return fmt.Errorf("follow catalogue: %w", err)
	}
	screens, err := nc.Subscribe(prefix+ScreenKeyPrefix+"*", handle)
	if err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("follow catalogue screens: %w", err)
	}
	defer func() { _ = screens.Unsubscribe() }()
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
