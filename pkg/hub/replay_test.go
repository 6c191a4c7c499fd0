package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
)

// memHistory is a History in memory that can be slow or unreachable, for
// what a real stream cannot be made to do on demand.
type memHistory struct {
	mu    sync.Mutex
	msgs  map[string][]broker.Msg // per room, oldest first
	depth int

	delay    atomic.Int64 // nanoseconds each request takes
	down     atomic.Bool  // requests hang until their context ends
	requests atomic.Int64
}

func newMemHistory(depth int) *memHistory {
	return &memHistory{msgs: make(map[string][]broker.Msg), depth: depth}
}

// add stores an update and returns the delivery the live subscription
// would get for it.
func (f *memHistory) add(room string, seq uint64, data string) broker.Delivery {
	return f.addAt(room, seq, data, time.Now())
}

// addAt is add with the time the stream stored it.
func (f *memHistory) addAt(room string, seq uint64, data string, at time.Time) broker.Delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := f.msgs[room]
	prev := uint64(0)
	if len(ms) > 0 {
		prev = ms[len(ms)-1].Seq
	}
	ms = append(ms, broker.Msg{Seq: seq, Prev: prev, Data: []byte(data), Time: at})
	if len(ms) > f.depth+1 {
		ms = ms[len(ms)-f.depth-1:]
	}
	f.msgs[room] = ms
	return broker.Delivery{Payload: []byte(data), Seq: seq, Prev: prev, Time: at}
}

func (f *memHistory) wait(ctx context.Context) error {
	f.requests.Add(1)
	if f.down.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	t := time.NewTimer(time.Duration(f.delay.Load()))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *memHistory) Latest(ctx context.Context, room string, before uint64) (broker.Msg, bool, error) {
	if err := f.wait(ctx); err != nil {
		return broker.Msg{}, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := f.msgs[room]
	for i := len(ms) - 1; i >= 0; i-- {
		if before == 0 || ms[i].Seq < before {
			return ms[i], true, nil
		}
	}
	return broker.Msg{}, false, nil
}

func (f *memHistory) From(ctx context.Context, room string, from uint64, limit int) ([]broker.Msg, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []broker.Msg
	for _, m := range f.msgs[room] {
		if m.Seq >= from && len(out) < limit {
			out = append(out, broker.Msg{Seq: m.Seq, Data: m.Data, Time: m.Time})
		}
	}
	return out, nil
}

func (f *memHistory) Since(ctx context.Context, room string, t time.Time, limit int) ([]broker.Msg, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []broker.Msg
	for _, m := range f.msgs[room] {
		if !m.Time.Before(t) && len(out) < limit {
			out = append(out, broker.Msg{Seq: m.Seq, Data: m.Data, Time: m.Time})
		}
	}
	return out, nil
}

func newHistoryHub(t testing.TB, src Source, hist History, memory int) *Hub {
	reg := prometheus.NewRegistry()
	return New(src, Options{MaxUpdateBytes: 1 << 16, History: hist, HistoryDepth: 100, Memory: memory, FetchTimeout: time.Second},
		metrics.New(reg), reg, slog.New(slog.DiscardHandler))
}

// smallBox is the tightest queue config allows.
func smallBox() *outbox.Outbox {
	return outbox.New(outbox.Limits{ConflateAfter: 1, MaxMessages: 2, MaxBytes: 4096}, nil)
}

// reader drains a box as a client's writer would and records the seqs of
// its updates (and whether any was flagged missed).
type reader struct {
	box  *outbox.Outbox
	mu   sync.Mutex
	seqs []uint64
	miss int
	done chan struct{}
	stop chan struct{}
}

func startReader(box *outbox.Outbox) *reader {
	r := &reader{box: box, done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			case <-box.Ready():
			}
			batch, overflowed := box.Take(nil)
			if overflowed {
				panic("reader's box overflowed")
			}
			r.mu.Lock()
			for _, m := range batch {
				var u struct {
					Op     string
					Seq    uint64
					Missed bool
				}
				_ = json.Unmarshal(m.AppendJSON(nil), &u)
				if u.Op == "update" {
					r.seqs = append(r.seqs, u.Seq)
					if u.Missed {
						r.miss++
					}
				}
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *reader) close() { close(r.stop); <-r.done }

func (r *reader) snapshot() ([]uint64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seqs), r.miss
}

// waitFor polls until the reader holds want (exactly, in order).
func (r *reader) waitFor(t testing.TB, want []uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, miss := r.snapshot()
		if slices.Equal(got, want) && miss == 0 {
			return
		}
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) || time.Now().After(deadline) {
			t.Fatalf("got %v (missed %d), want %v", got, miss, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// TestResumeDuringLive: a resume that needs the stream (the ring holds
// only the last 4) while live updates keep coming, with every read of the
// stream taking 300 ms: the live updates are not delayed by the read, the
// resumed client gets every update once, in order, and then goes live.
func TestResumeDuringLive(t *testing.T) {
	hist := newMemHistory(100)
	src := &manualSource{}
	h := newHistoryHub(t, src, hist, 4)
	keep := newBox()
	if err := h.Join(keep, JoinRequest{Room: "sales"}); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 50; seq++ {
		src.deliver(hist.add("sales", seq, fmt.Sprintf(`{"n":%d}`, seq)))
	}
	watch := startReader(newBox()) // a queue that never conflates at this pace
	defer watch.close()
	if err := h.Join(watch.box, JoinRequest{Room: "sales"}); err != nil {
		t.Fatal(err)
	}
	hist.delay.Store(int64(300 * time.Millisecond))

	c := startReader(smallBox())
	defer c.close()
	joined := make(chan error)
	go func() { joined <- h.Join(c.box, JoinRequest{Room: "sales", Since: 10, HasSince: true}) }()
	var slowest time.Duration
	for seq := uint64(51); seq <= 60; seq++ {
		start := time.Now()
		src.deliver(hist.add("sales", seq, fmt.Sprintf(`{"n":%d}`, seq)))
		slowest = max(slowest, time.Since(start))
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-joined; err != nil {
		t.Fatal(err)
	}
	if slowest > 250*time.Millisecond && !raceOn {
		t.Errorf("a live update took %v to fan out while a resume read the stream (300 ms)", slowest)
	}
	c.waitFor(t, seqRange(11, 60))
	src.deliver(hist.add("sales", 61, `{"n":61}`))
	c.waitFor(t, seqRange(11, 61))
	watch.waitFor(t, seqRange(50, 61)) // snapshot 50, then live, nothing conflated at this pace
}

// TestResumeAtLaggingGateway: a client that has seq 8 from another gateway
// resumes at one that has seen only up to 5; it must get nothing it has:
// 9 and on, once each. The join waits for the lagging subscription (which
// catches up meanwhile: no stream read), or, when it does not within
// FetchTimeout, reads on from the stream.
func TestResumeAtLaggingGateway(t *testing.T) {
	for _, tc := range []struct {
		name     string
		memory   int
		catchUp  bool // the late updates arrive while the join waits
		minReads int64
		maxReads int64
	}{
		{"subscription catches up", 100, true, 0, 0},
		// Whether the ring of one still holds 8 when the join wakes
		// depends on timing: either way nothing is sent twice or lost.
		{"subscription catches up, ring too small", 1, true, 0, 1},
		{"subscription stays behind: the stream", 100, false, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hist := newMemHistory(100)
			src := &manualSource{}
			h := newHistoryHub(t, src, hist, tc.memory)
			keep := newBox()
			if err := h.Join(keep, JoinRequest{Room: "sales"}); err != nil {
				t.Fatal(err)
			}
			var late []broker.Delivery
			for seq := uint64(1); seq <= 10; seq++ {
				d := hist.add("sales", seq, fmt.Sprintf(`{"n":%d}`, seq))
				if seq <= 5 {
					src.deliver(d)
				} else {
					late = append(late, d)
				}
			}
			c := startReader(newBox()) // live updates come back to back: no conflation here
			defer c.close()
			before := hist.requests.Load()
			joined := make(chan error, 1)
			go func() { joined <- h.Join(c.box, JoinRequest{Room: "sales", Since: 8, HasSince: true}) }()
			if tc.catchUp {
				time.Sleep(50 * time.Millisecond) // the join is waiting
				for _, d := range late {
					src.deliver(d)
				}
			}
			if err := <-joined; err != nil {
				t.Fatal(err)
			}
			if !tc.catchUp {
				for _, d := range late {
					src.deliver(d)
				}
			}
			src.deliver(hist.add("sales", 11, `{"n":11}`))
			c.waitFor(t, seqRange(9, 11))
			if reads := hist.requests.Load() - before; reads < tc.minReads || reads > tc.maxReads {
				t.Errorf("%d stream reads, want %d to %d", reads, tc.minReads, tc.maxReads)
			}
		})
	}
}

// TestStreamDown: with the stream hanging, a plain join of a cold room
// and a resume that needs the stream are both answered within
// FetchTimeout (+100 ms), and live updates keep flowing to the others.
func TestStreamDown(t *testing.T) {
	hist := newMemHistory(100)
	src := &manualSource{}
	reg := prometheus.NewRegistry()
	const timeout = 300 * time.Millisecond
	h := New(src, Options{MaxUpdateBytes: 1 << 16, History: hist, Memory: 100, FetchTimeout: timeout}, metrics.New(reg), reg, slog.New(slog.DiscardHandler))
	watch := startReader(newBox())
	defer watch.close()
	if err := h.Join(watch.box, JoinRequest{Room: "sales"}); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 150; seq++ {
		src.deliver(hist.add("sales", seq, fmt.Sprintf(`{"n":%d}`, seq)))
	}
	hist.down.Store(true)
	deliver := src.deliver // the cold room's Subscribe below replaces it

	stop := make(chan struct{})
	liveDone := make(chan time.Duration)
	go func() { // live updates at 50 Hz meanwhile
		var slowest time.Duration
		for seq := uint64(151); ; seq++ {
			select {
			case <-stop:
				liveDone <- slowest
				return
			case <-time.After(20 * time.Millisecond):
			}
			start := time.Now()
			deliver(hist.add("sales", seq, fmt.Sprintf(`{"n":%d}`, seq)))
			slowest = max(slowest, time.Since(start))
		}
	}()

	for _, tc := range []struct {
		name    string
		room    string
		req     JoinRequest
		wantErr error
	}{
		{"resume past the ring", "sales", JoinRequest{Room: "sales", Since: 2, HasSince: true}, ErrHistoryUnavailable},
		{"resume inside the ring", "sales", JoinRequest{Room: "sales", Since: 140, HasSince: true}, nil},
		{"plain join of a warm room", "sales", JoinRequest{Room: "sales"}, nil},
		{"plain join of a cold room", "cold", JoinRequest{Room: "cold"}, nil},
		{"resume in a cold room", "cold2", JoinRequest{Room: "cold2", Since: 2, HasSince: true}, ErrHistoryUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := h.Join(newBox(), tc.req)
			bound := timeout + 100*time.Millisecond
			if raceOn {
				bound = timeout + time.Second // scheduling under the race detector
			}
			if took := time.Since(start); took > bound {
				t.Errorf("join answered after %v, want within %v", took, bound)
			}
			if err != tc.wantErr {
				t.Errorf("join: %v, want %v", err, tc.wantErr)
			}
		})
	}
	close(stop)
	if slowest := <-liveDone; slowest > 50*time.Millisecond && !raceOn {
		t.Errorf("a live update took %v while the stream was down", slowest)
	}
	got, _ := watch.snapshot()
	if len(got) < 100+20 || !slices.IsSorted(got) {
		t.Errorf("watcher got %v: live updates stopped", got)
	}
}

// TestSnapshotSkipsRefused: a payload the gateway refuses is never a
// snapshot: a new viewer, alone (a cold room: from the stream) or not
// (the ring), gets the latest valid update, and the next valid update's
// prev is the last one forwarded, so no client sees a false gap.
func TestSnapshotSkipsRefused(t *testing.T) {
	for _, alone := range []bool{true, false} {
		t.Run(fmt.Sprintf("alone=%v", alone), func(t *testing.T) {
			hist := newMemHistory(100)
			src := &manualSource{}
			h := newHistoryHub(t, src, hist, 100)
			d1 := hist.add("sales", 1, `{"n":1}`)
			d2 := hist.add("sales", 2, `[1,2]`)
			d3 := hist.add("sales", 3, `not json`)
			if !alone {
				keep := newBox()
				if err := h.Join(keep, JoinRequest{Room: "sales"}); err != nil {
					t.Fatal(err)
				}
				for _, d := range []broker.Delivery{d1, d2, d3} {
					src.deliver(d)
				}
			}
			box := newBox()
			if err := h.Join(box, JoinRequest{Room: "sales"}); err != nil {
				t.Fatal(err)
			}
			if alone {
				for _, d := range []broker.Delivery{d1, d2, d3} {
					src.deliver(d) // late live copies: already seen or refused
				}
			}
			src.deliver(hist.add("sales", 4, `{"n":4}`))
			want := []string{
				`{"op":"joined","room":"sales"}`,
				`{"op":"update","room":"sales","seq":1,"prev":0,"data":{"n":1}}`,
				`{"op":"update","room":"sales","seq":4,"prev":1,"data":{"n":4}}`,
			}
			if got := drain(t, box, len(want)); !slices.Equal(got, want) {
				t.Fatalf("got\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestResumeBudget: joins with since past the budget are refused with
// ErrRateLimited before they cost anything; plain joins are not counted.
func TestResumeBudget(t *testing.T) {
	hist := newMemHistory(100)
	src := &manualSource{}
	reg := prometheus.NewRegistry()
	h := New(src, Options{MaxUpdateBytes: 1 << 16, History: hist, Memory: 1, ResumeRate: 0.001, ResumeBurst: 3}, metrics.New(reg), reg, slog.New(slog.DiscardHandler))
	for seq := uint64(1); seq <= 5; seq++ {
		hist.add("sales", seq, `{"n":1}`)
	}
	budget := h.NewBudget()
	box := newBox()
	for i := range 10 {
		before := hist.requests.Load()
		err := h.Join(box, JoinRequest{Room: "sales", Since: 1, HasSince: true, Budget: budget})
		if (i < 3) != (err == nil) || (err != nil && err != ErrRateLimited) {
			t.Fatalf("resume %d: %v", i+1, err)
		}
		if err != nil && hist.requests.Load() != before {
			t.Fatalf("a refused resume read the stream")
		}
		h.Leave(box, "sales", 0, false)
		if err := h.Join(box, JoinRequest{Room: "sales", Budget: budget}); err != nil {
			t.Fatalf("plain join %d: %v", i+1, err)
		}
		h.Leave(box, "sales", 0, false)
	}
}

// TestOtherRoomsNotBlocked: while one room's lock is held (a fan-out to a
// very large room), joins and leaves of other rooms go on: no global lock
// is held while waiting for a room.
func TestOtherRoomsNotBlocked(t *testing.T) {
	h := newHub(t, &fakeSource{})
	big := newBox()
	if err := h.Join(big, JoinRequest{Room: "big"}); err != nil {
		t.Fatal(err)
	}
	r := h.lookup("big")
	r.mu.Lock() // as a long fan-out would
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := newBox()
		for range 100 {
			_ = h.Join(b, JoinRequest{Room: "other"})
			h.Leave(b, "other", 0, false)
		}
		h.LeaveAll(b, []string{"other"})
		_ = h.Rooms()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("joins and leaves of another room waited for a busy room")
	}
	r.mu.Unlock()
	<-done
}

// TestStormWithSlowStream: 2,000 clients resume a room within half a second (half from
// the ring, half needing the stream, every stream read taking 300 ms)
// while 500 live members watch it at 20 Hz: every resumed client ends up
// with every update once, in order, and the live fan-out is never held up
// by the reads. The resumers have the default queue limits (conflate after
// 32), shorter than their replays, and read as fast as the race detector
// lets 2,500 readers run.
func TestStormWithSlowStream(t *testing.T) {
	if testing.Short() {
		t.Skip("storm")
	}
	hist := newMemHistory(100)
	src := &manualSource{}
	reg := prometheus.NewRegistry()
	// A generous fetch timeout: this test is about the live fan-out, and
	// 2,000 joins at once on a loaded machine (or under -race) must not
	// turn into history_unavailable.
	h := New(src, Options{MaxUpdateBytes: 1 << 16, History: hist, HistoryDepth: 100, Memory: 20, FetchTimeout: 20 * time.Second},
		metrics.New(reg), reg, slog.New(slog.DiscardHandler))
	var watchers []*reader
	for range 500 {
		w := startReader(newBox())
		defer w.close()
		if err := h.Join(w.box, JoinRequest{Room: "sales"}); err != nil {
			t.Fatal(err)
		}
		watchers = append(watchers, w)
	}
	var seq atomic.Uint64
	publish := func() time.Duration {
		s := seq.Add(1)
		start := time.Now()
		src.deliver(hist.add("sales", s, fmt.Sprintf(`{"n":%d}`, s)))
		return time.Since(start)
	}
	for range 60 {
		publish()
	}
	hist.delay.Store(int64(300 * time.Millisecond))

	stop := make(chan struct{})
	fanouts := make(chan []time.Duration)
	go func() {
		var ds []time.Duration
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				fanouts <- ds
				return
			case <-tick.C:
				ds = append(ds, publish())
			}
		}
	}()
	const n = 2000
	resumers := make([]*reader, n)
	since := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		resumers[i] = startReader(outbox.New(outbox.Limits{ConflateAfter: 32, MaxMessages: 256, MaxBytes: 1 << 20}, nil))
		defer resumers[i].close()
		since[i] = uint64(30 + i%2*25) // 30: the stream; 55: the ring
		if i%100 == 99 {
			// As a drain sends them: 2,000 over half a second, not all in
			// the same microsecond.
			time.Sleep(25 * time.Millisecond)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Join(resumers[i].box, JoinRequest{Room: "sales", Since: since[i], HasSince: true}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // live updates during the replays
	close(stop)
	ds := <-fanouts
	last := seq.Load()
	for i, r := range resumers {
		r.waitFor(t, seqRange(since[i]+1, last))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	p99 := ds[len(ds)*99/100]
	t.Logf("%d resumes; live fan-out to 500 watchers during the storm: p50 %v, p99 %v, max %v over %d updates; stream requests %d",
		n, ds[len(ds)/2], p99, ds[len(ds)-1], len(ds), hist.requests.Load())
	if p99 > 100*time.Millisecond && !raceOn {
		t.Errorf("live fan-out p99 %v during the storm, want < 100ms", p99)
	}
	for _, w := range watchers[:5] {
		got, _ := w.snapshot()
		if len(got) == 0 || got[len(got)-1] != last {
			t.Errorf("watcher stopped at %v, last is %d", got[len(got)-1:], last)
		}
	}
}

// BenchmarkResume measures the gateway's cost per resumed update: a
// client 100 updates behind resumes and takes its whole replay, from the
// room's memory or from a real JetStream stream (embedded NATS). Report
// ns/op divided by 100, or read the updates/s metric.
func BenchmarkResume(b *testing.B) {
	const behind = 100
	for _, source := range []string{"memory", "stream"} {
		b.Run(source, func(b *testing.B) {
			nc := newNATS(b, true)
			hcfg := broker.HistoryConfig{Stream: "B", SubjectPrefix: "roomcast.room", LivePrefix: "roomcast.live", Depth: 200, MaxAge: time.Hour, Replicas: 1}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := broker.EnsureStream(ctx, nc, hcfg, slog.New(slog.DiscardHandler)); err != nil {
				b.Fatal(err)
			}
			src := &manualSource{}
			memory := 2 * behind
			if source == "stream" {
				memory = 1
			}
			reg := prometheus.NewRegistry()
			h := New(src, Options{MaxUpdateBytes: 1 << 16, History: broker.NewHistory(nc, hcfg), HistoryDepth: 200, Memory: memory},
				metrics.New(reg), reg, slog.New(slog.DiscardHandler))
			keep := newBox()
			if err := h.Join(keep, JoinRequest{Room: "sales"}); err != nil {
				b.Fatal(err)
			}
			var seqs []uint64
			for i := range behind + 1 {
				data := fmt.Sprintf(`{"ts":1700000000000,"sales":%d,"orders":%d,"region":"north"}`, 1000+i, i)
				resp, err := nc.Request("roomcast.room.sales", []byte(data), 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				var ack struct{ Seq uint64 }
				_ = json.Unmarshal(resp.Data, &ack)
				prev := uint64(0)
				if len(seqs) > 0 {
					prev = seqs[len(seqs)-1]
				}
				src.deliver(broker.Delivery{Payload: []byte(data), Seq: ack.Seq, Prev: prev})
				seqs = append(seqs, ack.Seq)
			}
			box := outbox.New(outbox.Limits{ConflateAfter: 32, MaxMessages: 256, MaxBytes: 1 << 20}, nil)
			var batch []outbox.Message
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := h.Join(box, JoinRequest{Room: "sales", Since: seqs[0], HasSince: true}); err != nil {
					b.Fatal(err)
				}
				got := 0
				for got < behind {
					batch, _ = box.Take(batch)
					for _, m := range batch {
						if m.IsUpdate() {
							got++
						}
					}
					clear(batch)
				}
				h.Leave(box, "sales", 0, false)
				batch, _ = box.Take(batch)
				clear(batch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*behind), "ns/update")
		})
	}
}

// TestHistoryWindow: a join that asks for recent history gets the window,
// by count or by age, from the ring when it reaches back far enough and
// from the stream otherwise, then live updates with no gap.
func TestHistoryWindow(t *testing.T) {
	start := time.Now().Add(-time.Hour)
	at := func(seq uint64) time.Time { return start.Add(time.Duration(seq) * time.Minute) } // one update a minute
	for _, tc := range []struct {
		name   string
		req    JoinRequest
		memory int
		want   []uint64
	}{
		{"count from memory", JoinRequest{HistoryCount: 5}, 10, seqRange(36, 40)},
		{"count from the stream", JoinRequest{HistoryCount: 25}, 10, seqRange(16, 40)},
		{"count beyond what is stored", JoinRequest{HistoryCount: 500}, 10, seqRange(1, 40)},
		{"age from memory", JoinRequest{HistoryAge: 25*time.Minute + 30*time.Second}, 30, seqRange(35, 40)},
		{"age from the stream", JoinRequest{HistoryAge: 25*time.Minute + 30*time.Second}, 3, seqRange(35, 40)},
		{"an empty window still gets the latest", JoinRequest{HistoryAge: time.Second}, 10, []uint64{40}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hist := newMemHistory(100)
			src := &manualSource{}
			h := newHistoryHub(t, src, hist, tc.memory)
			keep := newBox()
			if err := h.Join(keep, JoinRequest{Room: "sales"}); err != nil {
				t.Fatal(err)
			}
			for seq := uint64(1); seq <= 40; seq++ {
				src.deliver(hist.addAt("sales", seq, fmt.Sprintf(`{"n":%d}`, seq), at(seq)))
			}
			c := startReader(smallBox())
			defer c.close()
			req := tc.req
			req.Room = "sales"
			if err := h.Join(c.box, req); err != nil {
				t.Fatal(err)
			}
			c.waitFor(t, tc.want)
			src.deliver(hist.add("sales", 41, `{"n":41}`))
			c.waitFor(t, append(tc.want, 41))
		})
	}
}
