//go:build linux

package wsread

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// nopReadable is a connection whose events the test takes itself.
type nopReadable struct{}

func (nopReadable) Readable() {}

type errCount struct{ n atomic.Int64 }

func (c *errCount) Inc() { c.n.Add(1) }

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testPoller makes a poller whose goroutine is not started.
func testPoller(t *testing.T, wait func(int, []syscall.EpollEvent, int) (int, error)) (*Poller, *errCount, *logBuffer) {
	t.Helper()
	errs, logs := new(errCount), new(logBuffer)
	p, err := newPoller(slog.New(slog.NewTextHandler(logs, nil)), errs, wait)
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

// TestPollerStaleEvent: a descriptor closed and reused by a new connection
// while an event of the old one is still in flight. The old event is not
// handed to the new session, the old session's late re-arm does not arm
// the new one, and the new session's own events reach it, one reader at a
// time.
func TestPollerStaleEvent(t *testing.T) {
	p, errs, _ := testPoller(t, syscall.EpollWait)
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
	b := new(Registration)
	if err := p.Add(nopReadable{}, b, accept()); err != nil {
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
	if b.reading.Load() {
		t.Fatal("the stale event marked the new session as being read")
	}

	// B's own event arrives and is claimed: B is being read, and
	// EPOLLONESHOT has disarmed its socket.
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

	// A's reader, late, re-arms: its socket is closed, so this must fail
	// and leave B's registration alone (by number, it would arm B while B
	// is being read).
	if err := a.Rearm(); err == nil {
		t.Fatal("re-arming a closed session succeeded")
	}
	if _, err := clients[1].Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if evs := socketEvents(t, p, 200*time.Millisecond); len(evs) != 0 {
		t.Fatalf("B's socket was re-armed while B is being read: events %+v", evs)
	}

	// Even an event for B's current generation cannot start a second
	// reader while B is read; the refusal is counted.
	if r := p.claim(pollEvent(b.fd, b.gen)); r != nil {
		t.Fatal("a second concurrent reader of one session was allowed")
	}
	if n := errs.n.Load(); n != 1 {
		t.Fatalf("poller errors %d, want 1 (the refused second reader)", n)
	}

	// B's reader is done and re-arms: the data waiting brings B's next
	// event.
	if err := b.Rearm(); err != nil {
		t.Fatal(err)
	}
	evs = socketEvents(t, p, 5*time.Second)
	if len(evs) != 1 || p.claim(evs[0]) != b {
		t.Fatalf("after re-arming B: events %+v, want B's", evs)
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
