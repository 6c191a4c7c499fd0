//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T, cfg Config) *Ring {
	t.Helper()
	r, err := New(cfg)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("io_uring not allowed here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func TestAvailable(t *testing.T) {
	if err := Available(); err != nil {
		t.Logf("io_uring unavailable (callers fall back): %v", err)
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("error does not wrap ErrUnavailable: %v", err)
		}
	}
}

// TestRefused is the fallback branch: a kernel that refuses io_uring (as
// seccomp or kernel.io_uring_disabled do) is reported as ErrUnavailable,
// while other setup errors are not.
func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		errno       syscall.Errno
		unavailable bool
	}{{unix.EPERM, true}, {unix.ENOSYS, true}, {unix.EACCES, true}, {unix.EINVAL, false}, {unix.ENOMEM, false}} {
		setup := func(uint32, *Params) (int, error) { return -1, tc.errno }
		err := Probe(setup)
		if err == nil || errors.Is(err, ErrUnavailable) != tc.unavailable || !errors.Is(err, tc.errno) {
			t.Errorf("%v: Probe = %v; want an error wrapping %v, unavailable %v", tc.errno, err, tc.errno, tc.unavailable)
		}
		if r, err := New(Config{Entries: 4, Setup: setup}); r != nil || err == nil {
			t.Errorf("%v: New = %v, %v; want no ring", tc.errno, r, err)
		}
	}
}

func TestNop(t *testing.T) {
	r := newRing(t, Config{Entries: 8})
	if r.Features()&featSingleMmap == 0 {
		t.Log("kernel without IORING_FEAT_SINGLE_MMAP: two ring mappings")
	}
	for round := range 3 { // slots and ring positions are reused
		for i := range 5 {
			if err := r.Nop(uint64(100*round + i)); err != nil {
				t.Fatal(err)
			}
		}
		if r.Unsubmitted() != 5 || r.InFlight() != 5 {
			t.Fatalf("unsubmitted %d, in flight %d; want 5, 5", r.Unsubmitted(), r.InFlight())
		}
		cqes, err := r.Wait(nil, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(cqes) != 5 || r.InFlight() != 0 || r.Unsubmitted() != 0 {
			t.Fatalf("%d completions, in flight %d; want 5, 0", len(cqes), r.InFlight())
		}
		seen := map[uint64]bool{}
		for _, c := range cqes {
			if c.Res != 0 || c.Err() != nil {
				t.Errorf("nop completed with %d", c.Res)
			}
			seen[c.UserData] = true
		}
		for i := range 5 {
			if !seen[uint64(100*round+i)] {
				t.Errorf("round %d: no completion for user data %d (got %v)", round, 100*round+i, cqes)
			}
		}
	}
}

// loopbackPairs returns n connected TCP pairs on 127.0.0.1: the dialed
// side's descriptor (owned by its net.Conn, which the test keeps open)
// and the accepted side to read from.
func loopbackPairs(t *testing.T, n int) (fds []int, writers, readers []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range n {
		w, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		rd, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close(); rd.Close() })
		sc, err := w.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Control(func(fd uintptr) { fds = append(fds, int(fd)) }); err != nil {
			t.Fatal(err)
		}
		writers, readers = append(writers, w), append(readers, rd)
	}
	return fds, writers, readers
}

func readFull(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return buf
}

// TestBatchedSends sends a frame to each of 300 loopback sockets, more
// than the submission queue holds, submitting whenever it is full and
// once at the end, and reads every frame back. Half are SENDs, half
// WRITEs.
func TestBatchedSends(t *testing.T) {
	const conns = 300
	r := newRing(t, Config{Entries: 64, CQEntries: 512})
	fds, writers, readers := loopbackPairs(t, conns)
	frames := make([][]byte, conns)
	for i := range frames {
		frames[i] = fmt.Appendf(nil, "\x81\x20frame %04d %s", i, bytes.Repeat([]byte{'x'}, 150))
	}
	enters := 0
	for i, fd := range fds {
		prep := func() error {
			if i%2 == 0 {
				return r.Send(fd, frames[i], unix.MSG_WAITALL|unix.MSG_NOSIGNAL, uint64(i))
			}
			return r.Write(fd, frames[i], uint64(i))
		}
		err := prep()
		if errors.Is(err, ErrSQFull) {
			if _, err := r.Submit(); err != nil {
				t.Fatal(err)
			}
			enters++
			err = prep()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC() // the frames are referenced only by the ring and this test's slice
	got := map[uint64]int32{}
	var cqes []CQE
	for len(got) < conns {
		var err error
		cqes, err = r.Wait(cqes[:0], 1)
		if err != nil {
			t.Fatal(err)
		}
		enters++
		for _, c := range cqes {
			got[c.UserData] = c.Res
		}
	}
	t.Logf("%d sends in %d io_uring_enter calls", conns, enters)
	for i := range conns {
		if res := got[uint64(i)]; int(res) != len(frames[i]) {
			t.Errorf("conn %d: completion %d, want %d", i, res, len(frames[i]))
		}
		if b := readFull(t, readers[i], len(frames[i])); !bytes.Equal(b, frames[i]) {
			t.Errorf("conn %d read %q, want %q", i, b, frames[i])
		}
	}
	_ = writers
}

// TestSQFull fills the submission queue: the next request is refused
// until Submit hands the queue to the kernel.
func TestSQFull(t *testing.T) {
	r := newRing(t, Config{Entries: 4, CQEntries: 64})
	n := r.SQEntries()
	for i := range n {
		if err := r.Nop(uint64(i)); err != nil {
			t.Fatalf("nop %d of %d: %v", i, n, err)
		}
	}
	if err := r.Nop(99); !errors.Is(err, ErrSQFull) {
		t.Fatalf("request %d: %v, want ErrSQFull", n+1, err)
	}
	if k, err := r.Submit(); err != nil || k != n {
		t.Fatalf("Submit = %d, %v; want %d", k, err, n)
	}
	if err := r.Nop(99); err != nil {
		t.Fatalf("after Submit: %v", err)
	}
	cqes, err := r.Wait(nil, n+1)
	if err != nil || len(cqes) != n+1 {
		t.Fatalf("Wait = %d completions, %v; want %d", len(cqes), err, n+1)
	}
}

// TestCQLimit: no more requests may be in flight than the completion
// queue holds (less the slot Close keeps), so it never overflows; reaping
// frees room again.
func TestCQLimit(t *testing.T) {
	r := newRing(t, Config{Entries: 4, CQEntries: 8})
	if r.CQEntries() != 8 || r.MaxInFlight() != 7 {
		t.Fatalf("CQ %d, max in flight %d; want 8, 7", r.CQEntries(), r.MaxInFlight())
	}
	prepared := 0
	for prepared < r.MaxInFlight() {
		err := r.Nop(uint64(prepared))
		if errors.Is(err, ErrSQFull) {
			if _, err := r.Submit(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		prepared++
	}
	if err := r.Nop(100); !errors.Is(err, ErrBusy) {
		t.Fatalf("request beyond the CQ: %v, want ErrBusy", err)
	}
	cqes, err := r.Wait(nil, prepared)
	if err != nil || len(cqes) != prepared {
		t.Fatalf("Wait = %d, %v; want %d completions", len(cqes), err, prepared)
	}
	if err := r.Nop(100); err != nil {
		t.Fatalf("after reaping: %v", err)
	}
}

func smallBuffers(t *testing.T, c net.Conn, opt int) {
	t.Helper()
	sc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := sc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 64<<10) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
}

// TestSendWaitsForSpace sends more than the socket buffers hold to a peer
// that does not read yet. A send completes with what fitted (a short
// count); the caller sends the rest, which stays in flight while there is
// no space (the kernel reads the buffer later, after garbage collections
// here), the ring's fd is not readable meanwhile, and it completes once
// the peer reads. The bytes arrive intact.
func TestSendWaitsForSpace(t *testing.T) {
	r := newRing(t, Config{Entries: 4})
	fds, writers, readers := loopbackPairs(t, 1)
	smallBuffers(t, writers[0], unix.SO_SNDBUF)
	smallBuffers(t, readers[0], unix.SO_RCVBUF)
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	want := bytes.Clone(big)
	// Send until a send stays in flight: the buffers are full.
	rest := big
	big = nil // only the ring holds the buffer while the kernel has it
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("1000 sends completed without filling the socket buffers")
		}
		if err := r.Send(fds[0], rest, unix.MSG_NOSIGNAL, 8); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		ready, err := pollIn(r.Fd(), 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if !ready {
			break // in flight, waiting for space
		}
		c := r.Reap(nil)
		if len(c) != 1 || c[0].UserData != 8 || c[0].Res <= 0 || int(c[0].Res) >= len(rest) {
			t.Fatalf("completions %+v; want one short send", c)
		}
		rest = rest[c[0].Res:]
	}
	if r.InFlight() != 1 || len(r.Reap(nil)) != 0 {
		t.Fatal("ring fd not readable but a completion waits")
	}
	done := make(chan []byte, 1)
	go func() { // the reader; ends when it has read everything or failed
		b := make([]byte, len(want))
		_ = readers[0].SetReadDeadline(time.Now().Add(20 * time.Second))
		n, _ := io.ReadFull(readers[0], b)
		done <- b[:n]
	}()
	for {
		if ready, err := pollIn(r.Fd(), 20*time.Second); err != nil || !ready {
			t.Fatalf("ring fd not readable after the peer read (%v)", err)
		}
		c := r.Reap(nil)
		if len(c) != 1 || c[0].Res <= 0 {
			t.Fatalf("completions %+v; want one send of some bytes", c)
		}
		rest = rest[c[0].Res:]
		if len(rest) == 0 {
			break
		}
		if err := r.Send(fds[0], rest, unix.MSG_NOSIGNAL, 8); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not what was sent", len(got))
	}
}

func pollIn(fd int, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, int(time.Until(deadline).Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n > 0, err
	}
}

// TestCloseCancels closes a ring with a receive in flight on a socket
// that never gets data: Close cancels it and returns.
func TestCloseCancels(t *testing.T) {
	r, err := New(Config{Entries: 4})
	if errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	fds, _, _ := loopbackPairs(t, 1)
	if err := r.Recv(fds[0], make([]byte, 64), 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Close() }() // ends when Close returns
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a receive in flight")
	}
}

// TestCheckSendNoWait: the writer's requirement holds on this kernel (or
// the check says why not), and the ring is left empty and usable.
func TestCheckSendNoWait(t *testing.T) {
	r := newRing(t, Config{Entries: 4})
	if err := r.CheckSendNoWait(); err != nil {
		t.Logf("the gateway would write with write(2) here: %v", err)
	}
	if r.InFlight() != 0 {
		t.Fatalf("%d requests left in flight", r.InFlight())
	}
	if err := r.Nop(1); err != nil {
		t.Fatal(err)
	}
	if c, err := r.Wait(nil, 1); err != nil || len(c) != 1 || c[0].UserData != 1 {
		t.Fatalf("Nop after the check: %v, %v", c, err)
	}
}
