//go:build linux

package wsread

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Poller watches the sockets of idle connections with one epoll instance
// and one goroutine, so that a connection waiting for its client's next
// message holds no goroutine and no read buffer. When a socket becomes
// readable, the poller calls the connection's Readable on a reader
// goroutine, which reads what arrived and handles it.
//
// Reader goroutines are kept for a while when they are done (readerIdle)
// and take the next event of any connection: a goroutine started per event
// begins with the smallest stack and grows it, copying, in every command's
// JSON decoding, which cost a quarter of the gateway's CPU under join and
// leave churn. A reader busy for long (a join waiting for the stream) only
// means another one is started.
//
// Sockets are registered once, edge-triggered (EPOLLET), and never
// re-armed: a command costs its read, not a read plus an epoll_ctl. Each
// registration has a reading state instead of EPOLLONESHOT: an event that
// comes while the connection is being read only marks it, and the reader,
// when it is done (Rearm), reads again rather than letting the edge go
// unseen. So there is one reader at a time, and no data is left unread.
//
// A descriptor number is reused by the kernel as soon as its socket is
// closed, so the number alone does not name a connection: an event taken
// from epoll_wait just before its connection closed would reach the
// connection that got the number next. Each registration therefore carries
// a generation in the event's data (descriptor in the low 32 bits,
// generation in the high 32), and an event whose generation is not the
// current owner's is dropped. The epoll_ctl calls (add and delete) run
// inside the connection's RawConn.Control, which holds the descriptor
// open, so they can never touch a successor's registration.
//
// Lifetime: NewPoller starts the goroutine; Close ends it, after the
// connections registered have gone (their owners' shutdown first).
type Poller struct {
	epfd int
	wake [2]int // a pipe: Close writes to end EpollWait

	log    *slog.Logger
	errors Counter // roomcast_poller_errors_total in the gateway
	// wait is syscall.EpollWait; tests put a failing one in its place.
	wait func(epfd int, events []syscall.EpollEvent, msec int) (int, error)

	mu    sync.RWMutex
	conns map[int32]*Registration // by descriptor; the Registration holds its generation
	gen   uint32                  // the latest registration's generation

	// work hands an event to an idle reader goroutine; unbuffered, so a
	// send succeeds only when one is waiting.
	work chan *Registration

	closeOnce sync.Once
	stop      chan struct{} // closed by Close: ends a backoff wait and idle readers
	done      chan struct{} // closed when run returns
}

// wakeFd marks the wake pipe's event; no socket has a negative descriptor.
const wakeFd = -1

// readerIdle is how long a reader goroutine waits for another event
// before it ends, so that goroutines return to their baseline at rest.
const readerIdle = time.Second

// pollBackoffMax bounds the pause after a failed epoll_wait, so that a
// persistent failure logs about once a second rather than spinning.
const pollBackoffMax = time.Second

// NewPoller starts a poller; on error the caller falls back to a reader
// goroutine per connection. Its failures are logged on log and counted in
// errs.
func NewPoller(log *slog.Logger, errs Counter) (*Poller, error) {
	p, err := newPoller(log, errs, syscall.EpollWait)
	if err != nil {
		return nil, err
	}
	go p.run()
	return p, nil
}

// newPoller makes a poller without starting its goroutine.
func newPoller(log *slog.Logger, errs Counter, wait func(int, []syscall.EpollEvent, int) (int, error)) (*Poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &Poller{
		epfd: epfd, log: log, errors: errs, wait: wait,
		conns: make(map[int32]*Registration),
		work:  make(chan *Registration),
		stop:  make(chan struct{}), done: make(chan struct{}),
	}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll wake pipe: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeFd}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return p, nil
}

func (p *Poller) closeFDs() {
	syscall.Close(p.epfd)
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
}

// Close stops the poller. Connections still registered are not closed.
func (p *Poller) Close() {
	p.closeOnce.Do(func() {
		close(p.stop)
		_, _ = syscall.Write(p.wake[1], []byte{0})
		<-p.done
		p.closeFDs()
	})
}

// pollEvents are edge-triggered: see Poller. syscall.EPOLLET is the int
// -0x80000000; masked, it is bit 31 of the uint32 event mask.
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLET&0xffffffff

// hangup is what an event says when the peer closed or the socket failed.
const hangup = syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR

// pollEvent is the event registered for descriptor fd in generation gen:
// the 64-bit epoll data is Fd (low half) and Pad (high half).
func pollEvent(fd int32, gen uint32) syscall.EpollEvent {
	return syscall.EpollEvent{Events: pollEvents, Fd: fd, Pad: int32(gen)}
}

// Readable is a connection watched by a Poller.
type Readable interface {
	// Readable is called on a goroutine of its own when the socket has
	// become readable. It reads with Registration.Read until that returns
	// 0 bytes, then calls Registration.Rearm to take the next event; a
	// connection that has ended does not re-arm. Until then no other
	// Readable call comes for this connection.
	Readable()
}

// Registration is a connection's place in a Poller. The connection holds
// it (the zero value) and Add fills it in before the socket is watched,
// so that Readable, which may come before Add returns, finds it complete.
type Registration struct {
	p       *Poller
	c       Readable
	raw     syscall.RawConn
	fd      int32
	gen     uint32
	state   atomic.Int32 // idle, reading, or reading with an event pending
	hup     atomic.Bool  // an event said the peer closed: read to the end
	drained bool         // the reader's last read was short: the socket is empty
}

// Registration states. An event moves idle to reading (and starts a
// reader) or reading to pending; Rearm moves reading to idle, or pending
// back to reading and reads again.
const (
	idle int32 = iota
	reading
	pending
)

// rawConn is what the poller needs of a connection: its file descriptor.
type rawConn interface {
	SyscallConn() (syscall.RawConn, error)
}

// Add watches nc's socket for c, with r as its registration. It fails
// for connections without a plain file descriptor (TLS), which then need
// a reader goroutine.
func (p *Poller) Add(c Readable, r *Registration, nc net.Conn) error {
	rc, ok := nc.(rawConn)
	if !ok {
		return errors.New("not a plain socket")
	}
	raw, err := rc.SyscallConn()
	if err != nil {
		return err
	}
	var ctlErr error
	cerr := raw.Control(func(f uintptr) {
		fd := int32(f)
		// Registered before EPOLL_CTL_ADD: the first event may come at once.
		p.mu.Lock()
		p.gen++
		r.p, r.c, r.raw, r.fd, r.gen = p, c, raw, fd, p.gen
		p.conns[fd] = r
		p.mu.Unlock()
		ev := pollEvent(fd, r.gen)
		if ctlErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); ctlErr != nil {
			p.forget(r)
		}
	})
	if cerr != nil {
		return cerr
	}
	return ctlErr
}

// forget drops r from the registry if it is still the owner of its number.
func (p *Poller) forget(r *Registration) {
	p.mu.Lock()
	if p.conns[r.fd] == r {
		delete(p.conns, r.fd)
	}
	p.mu.Unlock()
}

// Rearm ends the current read: the connection takes its next event. If
// an event came during the read, the data it announced may not have been
// read, so Readable is called again at once. Nothing is asked of the
// kernel (the socket stays registered, edge-triggered). It fails once the
// socket is closed.
func (r *Registration) Rearm() error {
	if err := r.raw.Control(func(uintptr) {}); err != nil {
		return err
	}
	r.drained = false
	for {
		switch r.state.Load() {
		case reading:
			if r.state.CompareAndSwap(reading, idle) {
				return nil
			}
		case pending:
			if r.state.CompareAndSwap(pending, reading) {
				r.p.dispatch(r)
				return nil
			}
		default:
			return errors.New("wsread: Rearm without a read")
		}
	}
}

// Remove stops watching the socket. Call it before closing the socket;
// should the socket be closed already, the kernel has dropped the
// registration and the number is left alone. It does nothing on a
// registration that Add did not fill in, and may be called more than once.
func (r *Registration) Remove() {
	if r.p == nil {
		return
	}
	r.p.forget(r)
	_ = r.raw.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(r.p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// Read reads what the socket holds without waiting: n == 0 and err == nil
// means nothing more for now (re-arm); io.EOF means the peer closed.
//
// A read shorter than buf emptied the socket's queue, and any byte that
// arrives after it brings a new event: the next Read then answers 0
// without asking the kernel (the read that would say EAGAIN is saved),
// unless an event said the peer closed, whose end must still be read.
func (r *Registration) Read(buf []byte) (n int, err error) {
	if r.drained && !r.hup.Load() {
		r.drained = false
		return 0, nil
	}
	var rerr error
	cerr := r.raw.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), buf)
		return true // never park: the poller tells us when there is more
	})
	switch {
	case cerr != nil:
		return 0, cerr
	case errors.Is(rerr, syscall.EAGAIN):
		return 0, nil
	case errors.Is(rerr, syscall.EINTR):
		return 0, nil
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	r.drained = n < len(buf)
	return n, nil
}

// claim returns the registration an event is for, now marked as being
// read, or nil: the event is stale (its connection is gone, the number
// perhaps reused), or the connection is being read already, in which case
// its reader is told to read again when it is done.
func (p *Poller) claim(ev syscall.EpollEvent) *Registration {
	p.mu.RLock()
	r := p.conns[ev.Fd]
	p.mu.RUnlock()
	if r == nil || r.gen != uint32(ev.Pad) {
		return nil
	}
	if ev.Events&hangup != 0 {
		r.hup.Store(true)
	}
	for {
		switch s := r.state.Load(); s {
		case idle:
			if r.state.CompareAndSwap(idle, reading) {
				return r
			}
		case reading:
			if r.state.CompareAndSwap(reading, pending) {
				return nil
			}
		default: // pending already
			return nil
		}
	}
}

func (p *Poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	var backoff time.Duration
	for {
		n, err := p.wait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if !p.failed(err, &backoff) {
				return
			}
			continue
		}
		backoff = 0
		for _, ev := range events[:n] {
			if ev.Fd == wakeFd {
				return
			}
			if r := p.claim(ev); r != nil {
				p.dispatch(r)
			}
		}
	}
}

// dispatch has r read by an idle reader goroutine, or by a new one.
func (p *Poller) dispatch(r *Registration) {
	select {
	case p.work <- r:
	default:
		go p.reader(r)
	}
}

// reader runs Readable for r, then for each event it is handed, until it
// has waited readerIdle for one or the poller closes.
func (p *Poller) reader(r *Registration) {
	var rest *time.Timer // named so as not to hide the idle state
	for {
		r.c.Readable()
		if rest == nil {
			rest = time.NewTimer(readerIdle)
		} else {
			rest.Reset(readerIdle)
		}
		select {
		case r = <-p.work:
		case <-rest.C:
			return
		case <-p.stop:
			rest.Stop()
			return
		}
	}
}

// failed logs and counts an epoll_wait failure and waits before the next
// try, longer each time in a row; it reports false if Close came first.
func (p *Poller) failed(err error, backoff *time.Duration) bool {
	p.errors.Inc()
	*backoff = min(max(2**backoff, time.Millisecond), pollBackoffMax)
	if errors.Is(err, syscall.EBADF) || errors.Is(err, syscall.EINVAL) {
		p.log.Error("epoll descriptor is broken: sockets on this poller are not read until it recovers; restart the gateway if this repeats",
			"err", err, "retry_in", *backoff)
	} else {
		p.log.Error("epoll_wait failed; retrying", "err", err, "retry_in", *backoff)
	}
	t := time.NewTimer(*backoff)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.stop:
		return false
	}
}
