//go:build linux

package ws

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/roomcast/roomcast/internal/uring"
)

// Writer is the event-loop writer of /ws sessions: a few long-lived write
// loops (one per GOMAXPROCS by default) that write the sessions' queues
// straight to their non-blocking sockets, so that a delivery starts or
// wakes no goroutine of its own. A push into an outbox puts its session on
// its loop's ready list (the loop is woken only if it sleeps); the loop
// takes the queue, frames it as writeBatch does, and writes with write(2)
// under the socket's RawConn, or, on the io_uring path, hands the writes
// of all the sessions it takes at once to the kernel as io_uring SENDs,
// one io_uring_enter for up to ringEntries of them. What the socket does
// not take stays in the session; the writer's own epoll instance
// (EPOLLOUT, one-shot) puts the session back on its loop when the socket
// can take more. A stalled session is ended after write_timeout without
// progress by a sweep of its loop.
//
// Descriptor reuse: as in package wsread, every epoll_ctl runs inside the
// socket's RawConn.Control (the descriptor cannot be closed meanwhile),
// and each registration carries a generation in the event's data, so an
// event of a closed socket never reaches the connection that got its
// number next. On the io_uring path a SEND names the socket by number,
// so the loop holds the session's lp.mu from preparing the SEND until its
// completion is reaped (the same io_uring_enter: sends are MSG_DONTWAIT,
// and NewWriter checks that this kernel completes them at once), and
// forget, which runs before the socket is closed, needs lp.mu.
//
// Lifetime: NewWriter starts the loops and the epoll goroutine; Close
// stops them and waits for them. Close after the sessions using the
// writer have ended: a session still queued is not written again.
type Writer struct {
	log   *slog.Logger
	path  string // PathURing or PathWrite
	loops []*evloop
	next  atomic.Uint32 // round robin of sessions over loops
	delay time.Duration // CoalesceDelay: a woken loop waits this long before taking its ready list

	epfd int
	wake [2]int // a pipe: Close writes to end EpollWait

	mu    sync.Mutex // the registry of sockets waiting for EPOLLOUT
	conns map[int32]*Session
	gen   uint32

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// WriterConfig tunes a Writer.
type WriterConfig struct {
	Loops         int           // write loops; 0: GOMAXPROCS
	CoalesceDelay time.Duration // see Config.CoalesceDelay
	// URing: "auto" writes through io_uring when this kernel allows it
	// and else with write(2); "on" fails without io_uring; "off" (or "")
	// always writes with write(2).
	URing string
	// URingSetup replaces io_uring_setup(2) (tests refuse io_uring with
	// it); nil is the real one.
	URingSetup uring.SetupFunc
	// URingEnter replaces io_uring_enter(2) (tests make the ring fail
	// with it); nil is the real one.
	URingEnter uring.EnterFunc
}

// The paths a Writer writes by.
const (
	PathURing = "io_uring"
	PathWrite = "write"
)

// ringEntries is each loop's submission queue: the most SENDs handed to
// the kernel in one io_uring_enter. Its completion queue is twice that.
const ringEntries = 1024

// NewWriter starts a writer. On error the gateway keeps a writer
// goroutine per busy session.
func NewWriter(log *slog.Logger, cfg WriterConfig) (*Writer, error) {
	n := cfg.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	var rings []*uring.Ring
	if cfg.URing == "auto" || cfg.URing == "on" {
		var err error
		if rings, err = newRings(n, cfg.URingSetup, cfg.URingEnter); err != nil {
			if cfg.URing == "on" {
				return nil, fmt.Errorf("io_uring required but not usable: %w", err)
			}
			log.Info("io_uring not used: the write loops write with write(2)", "err", err)
		}
	}
	loops, err := newWriter(log, n, cfg, rings)
	if err != nil {
		for _, r := range rings {
			_ = r.Close()
		}
		return nil, err
	}
	return loops, nil
}

// newRings sets up one ring per loop, after checking that this kernel
// completes a SEND to a full socket at once (see Ring.CheckSendNoWait).
func newRings(n int, setup uring.SetupFunc, enter uring.EnterFunc) ([]*uring.Ring, error) {
	var rings []*uring.Ring
	for range n {
		r, err := uring.New(uring.Config{Entries: ringEntries, CQEntries: 2 * ringEntries, Setup: setup, Enter: enter})
		if err == nil && len(rings) == 0 {
			if err = r.CheckSendNoWait(); err != nil {
				_ = r.Close()
			}
		}
		if err != nil {
			for _, r := range rings {
				_ = r.Close()
			}
			return nil, err
		}
		rings = append(rings, r)
	}
	return rings, nil
}

func newWriter(log *slog.Logger, n int, cfg WriterConfig, rings []*uring.Ring) (*Writer, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("writer epoll: %w", err)
	}
	w := &Writer{log: log, path: PathWrite, delay: cfg.CoalesceDelay, epfd: epfd, conns: make(map[int32]*Session), stop: make(chan struct{})}
	if rings != nil {
		w.path = PathURing
	}
	if err := syscall.Pipe2(w.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("writer wake pipe: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeFd}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, w.wake[0], &ev); err != nil {
		w.closeFDs()
		return nil, fmt.Errorf("writer epoll: %w", err)
	}
	for i := range n {
		l := &evloop{w: w, wake: make(chan struct{}, 1), stalled: make(map[*Session]struct{})}
		if rings != nil {
			l.ring = rings[i]
		}
		w.loops = append(w.loops, l)
	}
	log.Info("event-loop writer", "path", w.path, "loops", n)
	w.wg.Add(n + 1)
	for _, l := range w.loops {
		go l.run()
	}
	go w.pollOut()
	return w, nil
}

// Path says how the loops write: PathURing or PathWrite.
func (w *Writer) Path() string { return w.path }

// RingStats is how many SENDs the loops submitted through io_uring, in
// how many submissions (flush rounds, each one io_uring_enter unless a
// signal interrupted it).
func (w *Writer) RingStats() (sends, submissions uint64) {
	if w == nil {
		return 0, 0
	}
	for _, l := range w.loops {
		sends += l.sends.Load()
		submissions += l.enters.Load()
	}
	return sends, submissions
}

// RingFailures is how many loops gave their ring up after io_uring_enter
// failed and write with write(2) since (logged at error when it happens).
func (w *Writer) RingFailures() int {
	n := 0
	if w != nil {
		for _, l := range w.loops {
			if l.ringDown.Load() {
				n++
			}
		}
	}
	return n
}

// wakeFd marks the wake pipe's event; no socket has a negative descriptor.
const wakeFd = -1

func (w *Writer) closeFDs() {
	syscall.Close(w.epfd)
	syscall.Close(w.wake[0])
	syscall.Close(w.wake[1])
}

// Close stops the loops and the epoll goroutine and waits for them.
func (w *Writer) Close() {
	if w == nil {
		return
	}
	w.closeOnce.Do(func() {
		close(w.stop)
		_, _ = syscall.Write(w.wake[1], []byte{0})
		w.wg.Wait()
		w.closeFDs()
	})
}

// assign picks the loop that will write s for its whole life.
func (w *Writer) assign() *evloop {
	return w.loops[int(w.next.Add(1))%len(w.loops)]
}

// pollOut waits for sockets that became writable and puts their sessions
// back on their loops.
func (w *Writer) pollOut() {
	defer w.wg.Done()
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(w.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			w.log.Error("writer: epoll_wait failed; stalled sockets are resumed only by new messages until it recovers", "err", err)
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		for _, ev := range events[:n] {
			if ev.Fd == wakeFd {
				return
			}
			w.mu.Lock()
			s := w.conns[ev.Fd]
			stale := s == nil || s.lp.gen != uint32(ev.Pad) // gen is written under w.mu
			w.mu.Unlock()
			if stale {
				continue // stale: the socket is gone, its number perhaps reused
			}
			s.lp.writable.Store(true)
			s.lp.loop.schedule(s)
		}
	}
}

// evloop is one write loop. Its goroutine owns the sessions' write state
// while it runs their turns (under each session's lp.mu).
type evloop struct {
	w    *Writer
	wake chan struct{} // capacity 1: set by schedule, never blocks a pusher

	mu    sync.Mutex // ready only
	ready []*Session

	// Owned by the loop's goroutine.
	spare   []*Session
	stalled map[*Session]struct{} // sessions with bytes the socket did not take

	// The io_uring path (ring nil: write(2)). inRing are the sessions
	// whose SEND is prepared, each held under its lp.mu until the
	// completion has been handed to it; a SEND's user data is its
	// session's index in inRing.
	ring         *uring.Ring
	inRing, next []*Session
	cqes         []uring.CQE
	enters       atomic.Uint64 // io_uring_enter calls of flush
	sends        atomic.Uint64 // SENDs they submitted
	ringDown     atomic.Bool   // the ring failed: this loop writes with write(2)
}

// schedule puts s on the loop's ready list, once until its next turn.
func (l *evloop) schedule(s *Session) {
	if !s.lp.queued.CompareAndSwap(false, true) {
		return
	}
	l.mu.Lock()
	l.ready = append(l.ready, s)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// sweepEvery is how often a loop with stalled sessions checks their
// write_timeout (and close deadlines): a stalled client is ended at most
// this much after its time.
const sweepEvery = 25 * time.Millisecond

func (l *evloop) run() {
	defer l.w.wg.Done()
	defer func() {
		if l.ring != nil {
			_ = l.ring.Close()
		}
	}()
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		var tick <-chan time.Time
		switch {
		case len(l.stalled) > 0 && ticker == nil:
			ticker = time.NewTicker(sweepEvery)
			tick = ticker.C
		case len(l.stalled) > 0:
			tick = ticker.C
		case ticker != nil:
			ticker.Stop()
			ticker = nil
		}
		select {
		case <-l.w.stop:
			return
		case now := <-tick:
			l.sweep(now)
			continue
		case <-l.wake:
		}
		// CoalesceDelay: let one producer tick's updates gather so that
		// they leave in one frame; one wait per loop turn, not per client.
		if d := l.w.delay; d > 0 {
			time.Sleep(d)
		}
		l.mu.Lock()
		batch := l.ready
		l.ready = l.spare[:0]
		l.mu.Unlock()
		for _, s := range batch {
			// Cleared before the turn: a push during it schedules s again
			// rather than being missed.
			s.lp.queued.Store(false)
			l.turn(s)
			if len(l.inRing) >= ringEntries {
				l.flush()
			}
		}
		l.flush()
		clear(batch)
		l.spare = batch[:0]
	}
}

// turn runs one session's turn and ends it if that failed. A turn that
// put a SEND in the ring keeps lp.mu; flush finishes it.
func (l *evloop) turn(s *Session) {
	s.lp.mu.Lock()
	l.runTurn(s)
}

// runTurn runs the turn of s, under its lp.mu, and releases lp.mu unless
// the turn's write is in the ring.
func (l *evloop) runTurn(s *Session) {
	err := s.loopTurn(l)
	if s.lp.inRing {
		return
	}
	stalled := len(s.lp.out) > 0 && !s.isEnded()
	s.lp.mu.Unlock()
	if stalled {
		l.stalled[s] = struct{}{}
	} else {
		delete(l.stalled, s)
	}
	if err != nil {
		s.end(err)
	}
}

// write writes s's out: with write(2) at once, or by putting a SEND in
// the ring (inRing true: the turn stops, and flush runs it again with the
// result, which this returns then). Under s.lp.mu.
func (l *evloop) write(s *Session) (n int, err error, inRing bool) {
	lp := &s.lp
	if lp.resReady {
		lp.resReady = false
		return lp.resN, lp.resErr, false
	}
	if l.ring != nil {
		err := l.ring.Send(int(lp.sockFD), lp.out, syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, uint64(len(l.inRing)))
		if err == nil {
			lp.inRing = true
			l.inRing = append(l.inRing, s)
			return 0, nil, true
		}
		// The ring is full (flush keeps it from being): write(2) then.
	}
	n, err = writeNow(lp.raw, lp.out)
	return n, err, false
}

// flush submits the SENDs in the ring, gives each session its result and
// runs its turn on; turns that put another SEND in go round again, until
// none is left. Every session in inRing is under its lp.mu meanwhile.
func (l *evloop) flush() {
	for len(l.inRing) > 0 {
		batch := l.inRing
		l.inRing = l.next[:0]
		var err error
		l.cqes, err = l.ring.Wait(l.cqes[:0], len(batch))
		l.enters.Add(1)
		l.sends.Add(uint64(len(batch)))
		if err != nil {
			l.cqes = l.ring.Reap(l.cqes[:0])
		}
		for _, c := range l.cqes {
			lp := &batch[c.UserData].lp
			lp.inRing, lp.resReady = false, true
			switch {
			case c.Res >= 0:
				lp.resN, lp.resErr = int(c.Res), nil
			case c.Res == -int32(syscall.EAGAIN), c.Res == -int32(syscall.EINTR):
				lp.resN, lp.resErr = 0, nil // full: wait for EPOLLOUT
			default:
				lp.resN, lp.resErr = 0, c.Err()
			}
		}
		if err != nil || len(l.cqes) != len(batch) {
			l.ringFailed(batch, err)
		}
		for _, s := range batch {
			l.runTurn(s)
		}
		clear(batch)
		l.next = batch[:0]
	}
}

// ringFailed gives the ring up after io_uring_enter failed or left sends
// without a completion, which should never happen: this loop writes with
// write(2) from then on. A session whose send has no result cannot know
// what of its frame went, so it ends with the error.
func (l *evloop) ringFailed(batch []*Session, err error) {
	if err == nil {
		err = fmt.Errorf("%d sends without a completion", len(batch)-len(l.cqes))
	}
	l.w.log.Error("writer: io_uring failed; this write loop uses write(2) from now on", "err", err)
	_ = l.ring.Close()
	l.ring = nil
	l.ringDown.Store(true)
	for _, s := range batch {
		if lp := &s.lp; lp.inRing {
			lp.inRing, lp.resReady = false, true
			lp.resN, lp.resErr = 0, fmt.Errorf("io_uring: %w", err)
		}
	}
}

// sweep ends the stalled sessions whose bytes made no progress in time.
func (l *evloop) sweep(now time.Time) {
	for s := range l.stalled {
		s.lp.mu.Lock()
		due, pending := s.lp.due, len(s.lp.out) > 0
		s.lp.mu.Unlock()
		switch {
		case s.isEnded() || !pending:
			delete(l.stalled, s)
		case !due.IsZero() && now.After(due):
			delete(l.stalled, s)
			s.end(os.ErrDeadlineExceeded)
		}
	}
}

// arm asks for one EPOLLOUT event of s's socket. Under s.lp.mu.
func (w *Writer) arm(s *Session) error {
	var ctlErr error
	cerr := s.lp.raw.Control(func(f uintptr) {
		fd := int32(f)
		ev := syscall.EpollEvent{Events: syscall.EPOLLOUT | syscall.EPOLLONESHOT}
		op := syscall.EPOLL_CTL_MOD
		if !s.lp.registered {
			// Registered before EPOLL_CTL_ADD: the event may come at once.
			w.mu.Lock()
			w.gen++
			s.lp.gen, s.lp.fd = w.gen, fd
			w.conns[fd] = s
			w.mu.Unlock()
			s.lp.registered = true
			op = syscall.EPOLL_CTL_ADD
		}
		ev.Fd, ev.Pad = fd, int32(s.lp.gen)
		ctlErr = syscall.EpollCtl(w.epfd, op, int(fd), &ev)
	})
	if cerr != nil {
		return cerr
	}
	return ctlErr
}

// forget drops s's socket from the writer's epoll; the session calls it
// before closing the socket.
func (w *Writer) forget(s *Session) {
	s.lp.mu.Lock()
	defer s.lp.mu.Unlock()
	if s.lp.graceTimer != nil {
		s.lp.graceTimer.Stop()
	}
	if !s.lp.registered {
		return
	}
	s.lp.registered = false
	w.mu.Lock()
	if w.conns[s.lp.fd] == s {
		delete(w.conns, s.lp.fd)
	}
	w.mu.Unlock()
	_ = s.lp.raw.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// writeNow writes as much of p as the socket takes without waiting: n
// bytes, and err nil when the rest would block.
func writeNow(raw syscall.RawConn, p []byte) (n int, err error) {
	var werr error
	cerr := raw.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, e := rawWrite(int(fd), p[n:])
			if m > 0 {
				n += m
			}
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return true
			case e != nil:
				werr = e
				return true
			case m == 0:
				return true
			}
		}
		return true // never park: the writer's epoll says when there is room
	})
	if cerr != nil {
		return n, cerr
	}
	return n, werr
}

// rawWrite is write(2) without the scheduler's system call protocol
// (RawSyscall): the socket is non-blocking, so the call never waits, and
// a loop writing hundreds of sockets in a row must not give up its P on
// each one (sysmon hands a P in a system call to another thread; getting
// one back can wait behind every runnable goroutine).
func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
