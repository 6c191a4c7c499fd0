//go:build linux

package wsread

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roomcast/roomcast/internal/logtest"
)

// nopReadable is a connection whose events the test takes itself.
type nopReadable struct{}

func (nopReadable) Readable() {}

type errCount struct{ n atomic.Int64 }

func (c *errCount) Inc() { c.n.Add(1) }

// testPoller makes a poller whose goroutine is not started.
func testPoller(t *testing.T, wait func(int, []syscall.EpollEvent, int) (int, error)) (*Poller, *errCount, *logtest.Buffer) {
	t.Helper()
	errs := new(errCount)
	log, logs := logtest.New()
	p, err := newPoller(log, errs, wait)
	if err != nil {
		t.Fatal(err)
	}
	return p, errs, logs
}

// waitUntil polls cond every few milliseconds until it holds or timeout
// passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// socketEvents waits up to timeout for events on p's epoll instance, as
// the poller's goroutine would (which is not running here).
func socketEvents(t *testing.T, p *Poller, timeout time.Duration) []syscall.EpollEvent {
	t.Helper()
	evs := make([]syscall.EpollEvent, 8)
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return nil
		}
		n, err := syscall.EpollWait(p.epfd, evs, ms)
		if errors.Is(err, syscall.EINTR) {
			continue // the runtime's preemption signals
		}
		if err != nil {
			t.Fatal(err)
		}
		return evs[:n]
	}
}

// countReadable counts the Readable calls the registration makes itself
// (a re-read after an event that came during a read).
type countReadable struct{ n atomic.Int32 }

func (c *countReadable) Readable() { c.n.Add(1) }

// TestPollerStaleEvent: a descriptor closed and reused by a new connection
// while an event of the old one is still in flight. The old event is not
// handed to the new session, the old session's late Rearm fails and
// leaves the new one alone, and the new session's own events reach it,
// one reader at a time: an event during a read makes the reader read
// again instead of starting a second one.
func TestPollerStaleEvent(t *testing.T) {
	p, _, _ := testPoller(t, syscall.EpollWait)
	defer p.closeFDs()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Both clients connect before anything is accepted, so that between
	// closing A and accepting B nothing else takes a descriptor: B gets
	// A's number back (the lowest free one).
	var clients []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	accept := func() net.Conn {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	sa := accept()
	a := new(Registration)
	if err := p.Add(nopReadable{}, a, sa); err != nil {
		t.Fatal(err)
	}
	fdA, genA := a.fd, a.gen
	// A ends as a session does: out of the poller, then closed.
	a.Remove()
	if err := sa.Close(); err != nil {
		t.Fatal(err)
	}
	bc := new(countReadable)
	b := new(Registration)
	if err := p.Add(bc, b, accept()); err != nil {
		t.Fatal(err)
	}
	if b.fd != fdA {
		t.Logf("descriptor %d was not reused (B has %d); the stale event is made for B's number", fdA, b.fd)
	}

	// An event of A's registration, taken from epoll_wait before A closed
	// and handled now: it carries B's number but A's generation.
	if r := p.claim(pollEvent(b.fd, genA)); r != nil {
		t.Fatal("a stale event (old generation of the descriptor) was dispatched to the new session")
	}
	if b.state.Load() != idle {
		t.Fatal("the stale event marked the new session as being read")
	}

	// B's own event arrives and is claimed: B is being read.
	if _, err := clients[1].Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	evs := socketEvents(t, p, 5*time.Second)
	if len(evs) != 1 || evs[0].Fd != b.fd || uint32(evs[0].Pad) != b.gen {
		t.Fatalf("events %+v, want one for fd %d generation %d", evs, b.fd, b.gen)
	}
	if r := p.claim(evs[0]); r != b {
		t.Fatal("B's event was not dispatched to B")
	}

	// A's reader, late, re-arms: its socket is closed, so this fails and
	// leaves B alone.
	if err := a.Rearm(); err == nil {
		t.Fatal("re-arming a closed session succeeded")
	}
	if b.state.Load() != reading {
		t.Fatal("A's late Rearm changed B's state")
	}

	// More data for B while B is read: its event starts no second reader.
	if _, err := clients[1].Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	evs = socketEvents(t, p, 5*time.Second)
	if len(evs) != 1 {
		t.Fatalf("events %+v, want B's second edge", evs)
	}
	if r := p.claim(evs[0]); r != nil {
		t.Fatal("a second concurrent reader of one session was allowed")
	}
	// B's reader is done: the event it missed makes it read again.
	if err := b.Rearm(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "Rearm did not read again after an event during the read", func() bool { return bc.n.Load() == 1 })
	if b.state.Load() != reading {
		t.Fatal("the re-read does not hold the connection")
	}
	if err := b.Rearm(); err != nil {
		t.Fatal(err)
	}
	// Idle and registered once: new data brings an event, with no re-arm.
	if _, err := clients[1].Write([]byte("z")); err != nil {
		t.Fatal(err)
	}
	evs = socketEvents(t, p, 5*time.Second)
	if len(evs) != 1 || p.claim(evs[0]) != b {
		t.Fatalf("after B's read: events %+v, want B's", evs)
	}
}

// echoReadable reads everything with Registration.Read, as a session
// does, and counts the bytes.
type echoReadable struct {
	reg   Registration
	bytes atomic.Int64
	buf   []byte // small: most reads fill it, some are short
	mu    sync.Mutex
	inUse bool
	fail  atomic.Bool
}

func (e *echoReadable) Readable() {
	e.mu.Lock()
	if e.inUse {
		e.fail.Store(true)
	}
	e.inUse = true
	e.mu.Unlock()
	for {
		n, err := e.reg.Read(e.buf)
		e.bytes.Add(int64(n))
		if err != nil || n == 0 {
			break
		}
	}
	e.mu.Lock()
	e.inUse = false
	e.mu.Unlock()
	_ = e.reg.Rearm()
}

// TestPollerNoLostEdge: bytes written in many small pieces, while the
// reader is reading and between its reads, are all read, by one reader
// at a time. With edge-triggered events, a reader that stopped at a short
// read and an event dropped during a read would each leave bytes unread.
func TestPollerNoLostEdge(t *testing.T) {
	p, err := NewPoller(slog.New(slog.DiscardHandler), new(errCount))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const conns, writes = 8, 2000
	var rs []*echoReadable
	var cs []net.Conn
	for range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		e := &echoReadable{buf: make([]byte, 7)}
		if err := p.Add(e, &e.reg, s); err != nil {
			t.Fatal(err)
		}
		rs, cs = append(rs, e), append(cs, c)
	}
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			piece := []byte("0123456789"[:1+i%10])
			for range writes {
				if _, err := c.Write(piece); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, e := range rs {
		want := int64(writes * (1 + i%10))
		waitUntil(t, 10*time.Second, "bytes left unread", func() bool { return e.bytes.Load() == want })
		if e.fail.Load() {
			t.Errorf("connection %d had two readers at once", i)
		}
	}
}

// TestPollerWaitErrors: epoll_wait failing with something other than
// EINTR is logged and counted, and the poller goes back to waiting (it
// used to stop, leaving every connection unread).
func TestPollerWaitErrors(t *testing.T) {
	inject := []error{syscall.EFAULT, syscall.EBADF}
	var calls atomic.Int32
	wait := func(epfd int, evs []syscall.EpollEvent, ms int) (int, error) {
		if i := int(calls.Add(1)); i <= len(inject) {
			return -1, inject[i-1]
		}
		return syscall.EpollWait(epfd, evs, ms)
	}
	p, errs, logs := testPoller(t, wait)
	go p.run()
	waitUntil(t, 5*time.Second, "the poller did not wait again after its errors", func() bool {
		return int(calls.Load()) > len(inject)
	})
	if n := errs.n.Load(); n != int64(len(inject)) {
		t.Errorf("poller errors %d, want %d", n, len(inject))
	}
	out := logs.String()
	for _, want := range []string{"epoll_wait failed", "bad address", "epoll descriptor is broken", "bad file descriptor"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	// The recovered loop still serves: it sees Close's wake-up.
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: the poller's loop is not running")
	}
}

// TestPollerCloseDuringBackoff: a poller whose epoll_wait keeps failing
// still closes at once.
func TestPollerCloseDuringBackoff(t *testing.T) {
	wait := func(int, []syscall.EpollEvent, int) (int, error) { return -1, syscall.EINVAL }
	p, errs, _ := testPoller(t, wait)
	go p.run()
	// By the 10th failure in a row the pause is 512 ms.
	waitUntil(t, 5*time.Second, "no failures counted", func() bool { return errs.n.Load() >= 10 })
	start := time.Now()
	p.Close()
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Fatalf("Close took %v", d)
	}
}
