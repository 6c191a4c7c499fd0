package outbox

import (
	"strings"
	"sync"
	"testing"
	"unsafe"
)

// TestMessageSize: the queues' size decides the fan-out's cache misses at
// 10,000 clients (BenchmarkFanout): a message is two pointers and flags.
func TestMessageSize(t *testing.T) {
	t.Parallel()
	if n := unsafe.Sizeof(Message{}); unsafe.Sizeof(uintptr(0)) == 8 && n != 24 {
		t.Fatalf("outbox.Message is %d bytes, want 24", n)
	}
}

// upd is an update of room whose size is len("room:v"), so that the byte
// bounds of the cases below read plainly.
func upd(room, v string) Message {
	data := []byte(room + ":" + v)
	return Message{Pub: &Publication{Room: room, Data: data, size: len(data)}}
}
func reply(room, v string) Message { return Message{Reply: &Reply{Kind: Left, Room: room, Message: v}} }

func frames(ms []Message) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		if m.Pub != nil {
			s[i] = string(m.Pub.Data)
		} else {
			s[i] = m.Reply.Room + ":" + m.Reply.Message
		}
	}
	return strings.Join(s, " ")
}

func TestPushPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		limits  Limits
		push    []Message
		results []Result
		queued  string // frames left, in order
		over    bool
	}{
		{
			name:    "queues below the conflation bound",
			limits:  Limits{ConflateAfter: 4, MaxMessages: 8, MaxBytes: 1 << 20},
			push:    []Message{upd("a", "1"), upd("a", "2"), upd("b", "1")},
			results: []Result{Queued, Queued, Queued},
			queued:  "a:1 a:2 b:1",
		},
		{
			name:    "latest wins per room past the bound",
			limits:  Limits{ConflateAfter: 2, MaxMessages: 8, MaxBytes: 1 << 20},
			push:    []Message{upd("a", "1"), upd("b", "1"), upd("a", "2"), upd("b", "2"), upd("c", "1")},
			results: []Result{Queued, Queued, Conflated, Conflated, Queued},
			queued:  "a:2 b:2 c:1",
		},
		{
			name:    "an update never jumps ahead of a reply of its room",
			limits:  Limits{ConflateAfter: 1, MaxMessages: 8, MaxBytes: 1 << 20},
			push:    []Message{upd("a", "1"), reply("a", "left"), reply("a", "joined"), upd("a", "2"), upd("a", "3")},
			results: []Result{Queued, Queued, Queued, Queued, Conflated},
			queued:  "a:1 a:left a:joined a:3",
		},
		{
			name:    "replies are never conflated",
			limits:  Limits{ConflateAfter: 1, MaxMessages: 3, MaxBytes: 1 << 20},
			push:    []Message{reply("a", "e1"), reply("a", "e2"), reply("a", "e3"), reply("a", "e4"), upd("a", "1")},
			results: []Result{Queued, Queued, Queued, Overflowed, Overflowed},
			over:    true,
		},
		{
			name:    "too many rooms overflow the message bound",
			limits:  Limits{ConflateAfter: 1, MaxMessages: 2, MaxBytes: 1 << 20},
			push:    []Message{upd("a", "1"), upd("b", "1"), upd("c", "1"), upd("a", "2")},
			results: []Result{Queued, Queued, Overflowed, Overflowed},
			over:    true,
		},
		{
			name:    "byte bound",
			limits:  Limits{ConflateAfter: 10, MaxMessages: 10, MaxBytes: 8},
			push:    []Message{upd("a", "1"), upd("b", "1"), upd("c", "1")},
			results: []Result{Queued, Queued, Overflowed},
			over:    true,
		},
		{
			name:    "conflation that grows the frame still respects the byte bound",
			limits:  Limits{ConflateAfter: 1, MaxMessages: 10, MaxBytes: 8},
			push:    []Message{upd("a", "1"), upd("a", "123456")},
			results: []Result{Queued, Conflated},
			queued:  "a:123456",
		},
		{
			name:    "half the byte bound starts conflation before the message bound",
			limits:  Limits{ConflateAfter: 100, MaxMessages: 200, MaxBytes: 12},
			push:    []Message{upd("a", "1"), upd("b", "1"), upd("a", "2"), upd("a", "3")},
			results: []Result{Queued, Queued, Conflated, Conflated},
			queued:  "a:3 b:1",
		},
		{
			name:    "a conflation past the byte bound overflows",
			limits:  Limits{ConflateAfter: 1, MaxMessages: 10, MaxBytes: 8},
			push:    []Message{upd("a", "1"), upd("a", "1234567")},
			results: []Result{Queued, Overflowed},
			over:    true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			overflows := 0
			o := New(tt.limits, func() { overflows++ })
			for i, m := range tt.push {
				if got := o.Push(m); got != tt.results[i] {
					t.Fatalf("push %d (%s): %v, want %v", i, frames([]Message{m}), got, tt.results[i])
				}
			}
			_, bytes := o.Len()
			batch, over := o.Take(nil)
			if over != tt.over {
				t.Fatalf("overflowed = %v, want %v", over, tt.over)
			}
			if want := map[bool]int{true: 1}[tt.over]; overflows != want {
				t.Fatalf("overflow callback called %d times, want %d", overflows, want)
			}
			if got := frames(batch); got != tt.queued {
				t.Fatalf("queued %q, want %q", got, tt.queued)
			}
			want := 0
			for _, m := range batch {
				want += m.Size()
			}
			if bytes != want {
				t.Fatalf("bytes = %d, want %d", bytes, want)
			}
		})
	}
}

func TestCloseDropsAndRefuses(t *testing.T) {
	t.Parallel()
	o := New(Limits{ConflateAfter: 2, MaxMessages: 4, MaxBytes: 100}, nil)
	o.Push(upd("a", "1"))
	o.Close()
	if n, b := o.Len(); n != 0 || b != 0 {
		t.Fatalf("closed outbox holds %d messages, %d bytes", n, b)
	}
	if r := o.Push(upd("a", "2")); r != Closed {
		t.Fatalf("push after close: %v", r)
	}
}

// TestConcurrentPushTake checks, under -race, that every pushed message is
// taken exactly once and in per-pusher order when nothing overflows.
func TestConcurrentPushTake(t *testing.T) {
	t.Parallel()
	const pushers, each = 8, 2000
	o := New(Limits{ConflateAfter: 1 << 30, MaxMessages: 1 << 30, MaxBytes: 1 << 30}, nil)
	var wg sync.WaitGroup
	for p := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				o.Push(Message{Reply: &Reply{Kind: Left, ID: int64(p)<<16 | int64(i)}})
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	next := make([]int, pushers)
	var batch []Message
	check := func() {
		batch, _ = o.Take(batch)
		for _, m := range batch {
			p, i := int(m.Reply.ID>>16), int(m.Reply.ID&0xffff)
			if i != next[p] {
				t.Fatalf("pusher %d: got message %d, want %d", p, i, next[p])
			}
			next[p]++
		}
		clear(batch)
	}
	for {
		select {
		case <-o.Ready():
			check()
			continue
		case <-done:
		}
		break
	}
	check()
	for p, n := range next {
		if n != each {
			t.Fatalf("pusher %d: took %d of %d", p, n, each)
		}
	}
}

func BenchmarkPush(b *testing.B) {
	o := New(Limits{ConflateAfter: 64, MaxMessages: 256, MaxBytes: 1 << 20}, nil)
	m := upd("sales", "payload")
	var batch []Message
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		o.Push(m)
		if i%32 == 31 {
			batch, _ = o.Take(batch)
			clear(batch)
		}
	}
}

// BenchmarkPushConflating measures a push while the client is behind: the
// queue is past the conflation bound and each push replaces a queued
// update of one of 8 rooms.
func BenchmarkPushConflating(b *testing.B) {
	o := New(Limits{ConflateAfter: 32, MaxMessages: 256, MaxBytes: 1 << 20}, nil)
	rooms := []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"}
	for i := range 32 {
		o.Push(upd(rooms[i%8], "x"))
	}
	msgs := make([]Message, len(rooms))
	for i, r := range rooms {
		msgs[i] = upd(r, "y")
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if o.Push(msgs[i%8]) != Conflated {
			b.Fatal("not conflated")
		}
	}
}

// waitingFeed has nothing until it is given something, as a replay that
// waits for its room does.
type waitingFeed struct{ have []Message }

func (f *waitingFeed) Next(o *Outbox, max int) bool {
	for len(f.have) > 0 && max > 0 {
		o.Push(f.have[0])
		f.have, max = f.have[1:], max-1
	}
	return false
}

// TestWakeIsNotLost: a taker that found nothing and is about to stop sees
// a feed added or woken after its Take (Busy), so neither is lost; the
// next Take clears it.
func TestWakeIsNotLost(t *testing.T) {
	o := NewNotify(Limits{ConflateAfter: 4, MaxMessages: 8, MaxBytes: 1 << 10}, nil, func() {})
	f := &waitingFeed{}
	o.AddFeed(f)
	if !o.Busy() {
		t.Fatal("a feed added after the taker's last Take is not visible to it")
	}
	if batch, _ := o.Take(nil); len(batch) != 0 || o.Busy() {
		t.Fatalf("took %d, busy %v: want nothing", len(batch), o.Busy())
	}
	f.have = []Message{{Pub: NewPublication("r", 1, 0, false, []byte(`{}`), 0), Replay: true}}
	o.Wake() // between the taker's empty Take and its decision to stop
	if !o.Busy() {
		t.Fatal("a wake after an empty Take is not visible to the taker")
	}
	if batch, _ := o.Take(nil); len(batch) != 1 || o.Busy() {
		t.Fatalf("took %d, busy %v: want the feed's message and no more work", len(batch), o.Busy())
	}
}

// takingFeed pushes a page and lets the taker take it before Next
// returns, as a loop writer running beside a refill does.
type takingFeed struct {
	pages int
	take  func()
}

func (f *takingFeed) Next(o *Outbox, max int) bool {
	if f.pages == 0 {
		return true
	}
	f.pages--
	o.Push(Message{Pub: NewPublication("r", 1, 0, false, []byte(`{}`), 0), Replay: true})
	f.take()
	return false
}

// TestRefillProgress: Refill reports progress by what it queued, even
// when the taker took it meanwhile (the queue length is unchanged), and
// reports none for a feed that has nothing; TakeQueued never asks the
// feeds.
func TestRefillProgress(t *testing.T) {
	o := NewNotify(Limits{ConflateAfter: 8, MaxMessages: 16, MaxBytes: 1 << 20}, nil, func() {})
	var taken int
	f := &takingFeed{pages: 1}
	f.take = func() { b, _ := o.TakeQueued(nil); taken += len(b) }
	o.AddFeed(f)
	if b, _ := o.TakeQueued(nil); len(b) != 0 || f.pages != 1 {
		t.Fatalf("TakeQueued took %d and asked the feed", len(b))
	}
	if !o.NeedsRefill() {
		t.Fatal("an empty queue with a feed needs a refill")
	}
	if !o.Refill() || taken != 1 {
		t.Fatalf("refill that queued a page (taken at once) reported no progress; taken %d", taken)
	}
	w := &waitingFeed{}
	o2 := NewNotify(Limits{ConflateAfter: 8, MaxMessages: 16, MaxBytes: 1 << 20}, nil, func() {})
	o2.AddFeed(w)
	if o2.Refill() {
		t.Fatal("a waiting feed that queued nothing reported progress")
	}
}

// TestPushPairWakesOnce: a join's reply and snapshot pushed as a pair
// reach a writer that takes its queue at every wake-up as one batch (one
// frame, one write); pushed one by one, the first wake-up takes the reply
// alone. A pair that overflows the queue starts its close once.
func TestPushPairWakesOnce(t *testing.T) {
	reply := Message{Reply: &Reply{Kind: Joined, Room: "r"}}
	snap := Message{Pub: NewPublication("r", 1, 0, false, []byte(`{}`), 0), Snapshot: true}
	eager := func(l Limits) (*Outbox, *[]int, *int) {
		var batches []int
		overflows := 0
		var o *Outbox
		o = NewNotify(l, func() { overflows++ }, func() {
			if b, _ := o.Take(nil); len(b) > 0 {
				batches = append(batches, len(b))
			}
		})
		return o, &batches, &overflows
	}
	roomy := Limits{ConflateAfter: 4, MaxMessages: 8, MaxBytes: 1 << 10}

	o, batches, _ := eager(roomy)
	o.Push(reply)
	o.Push(snap)
	if got := *batches; len(got) != 2 {
		t.Fatalf("two pushes: batches %v, want the reply taken alone first", got)
	}
	o, batches, _ = eager(roomy)
	o.PushPair(reply, snap)
	if got := *batches; len(got) != 1 || got[0] != 2 {
		t.Fatalf("a pair: batches %v, want one batch of 2", got)
	}

	o, _, overflows := eager(Limits{ConflateAfter: 1, MaxMessages: 1, MaxBytes: 1 << 10})
	o.Push(Message{Reply: &Reply{Kind: Left, Room: "q"}})
	o.PushPair(reply, snap)
	if *overflows != 1 {
		t.Fatalf("a pair past the queue's limit: %d overflows, want 1", *overflows)
	}
}
