//go:build linux

package session

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/roomcast/roomcast/pkg/metrics"
)

// Poller watches the sockets of idle connections with one epoll instance
// and one goroutine, so that a connection waiting for its client's next
// command holds no goroutine and no read buffer. When a socket becomes
// readable, a short-lived goroutine reads what arrived, runs the commands
// and re-arms the socket (EPOLLONESHOT: one event, one reader).
//
// A descriptor number is reused by the kernel as soon as its socket is
// closed, so the number alone does not name a connection: an event taken
// from epoll_wait just before its connection closed would reach the
// connection that got the number next. Each registration therefore carries
// a generation in the event's data (descriptor in the low 32 bits,
// generation in the high 32), and an event whose generation is not the
// current owner's is dropped. Every epoll_ctl on a session's descriptor
// runs inside its RawConn.Control, which holds the descriptor open, so a
// late re-arm can never touch a successor's registration; and a session's
// reading flag makes a second concurrent reader impossible.
//
// Lifetime: NewPoller starts the goroutine; Close ends it after the
// gateway's sessions are gone.
type Poller struct {
	epfd int
	wake [2]int // a pipe: Close writes to end EpollWait

	log    *slog.Logger
	errors interface{ Inc() } // roomcast_poller_errors_total
	// wait is syscall.EpollWait; tests put a failing one in its place.
	wait func(epfd int, events []syscall.EpollEvent, msec int) (int, error)

	mu    sync.RWMutex
	conns map[int32]*Session // by descriptor; the Session holds its generation
	gen   uint32             // the latest registration's generation

	closeOnce sync.Once
	stop      chan struct{} // closed by Close: ends a backoff wait
	done      chan struct{} // closed when run returns
}

// wakeFd marks the wake pipe's event; no socket has a negative descriptor.
const wakeFd = -1

// pollBackoffMax bounds the pause after a failed epoll_wait, so that a
// persistent failure logs about once a second rather than spinning.
const pollBackoffMax = time.Second

// NewPoller starts a poller; on error the caller falls back to a reader
// goroutine per connection. Its failures are logged on log and counted in
// m.PollerErrors.
func NewPoller(log *slog.Logger, m *metrics.Metrics) (*Poller, error) {
	p, err := newPoller(log, m.PollerErrors, syscall.EpollWait)
	if err != nil {
		return nil, err
	}
	go p.run()
	return p, nil
}

// newPoller makes a poller without starting its goroutine.
func newPoller(log *slog.Logger, errs interface{ Inc() }, wait func(int, []syscall.EpollEvent, int) (int, error)) (*Poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &Poller{
		epfd: epfd, log: log, errors: errs, wait: wait,
		conns: make(map[int32]*Session),
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

// Close stops the poller. Sessions still registered are not closed.
func (p *Poller) Close() {
	p.closeOnce.Do(func() {
		close(p.stop)
		_, _ = syscall.Write(p.wake[1], []byte{0})
		<-p.done
		p.closeFDs()
	})
}

const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// pollEvent is the event registered for descriptor fd in generation gen:
// the 64-bit epoll data is Fd (low half) and Pad (high half).
func pollEvent(fd int32, gen uint32) syscall.EpollEvent {
	return syscall.EpollEvent{Events: pollEvents, Fd: fd, Pad: int32(gen)}
}

// rawConn is what the poller needs of a connection: its file descriptor.
type rawConn interface {
	SyscallConn() (syscall.RawConn, error)
}

// add watches s's socket. It fails for connections without a plain file
// descriptor (TLS), which then need a reader goroutine.
func (p *Poller) add(s *Session, c net.Conn) error {
	rc, ok := c.(rawConn)
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
		s.raw, s.fd, s.pollGen = raw, int(fd), p.gen
		p.conns[fd] = s
		p.mu.Unlock()
		ev := pollEvent(fd, s.pollGen)
		if ctlErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); ctlErr != nil {
			p.forget(s)
		}
	})
	if cerr != nil {
		return cerr
	}
	return ctlErr
}

// forget drops s from the registry if it is still the owner of its number.
func (p *Poller) forget(s *Session) {
	p.mu.Lock()
	if p.conns[int32(s.fd)] == s {
		delete(p.conns, int32(s.fd))
	}
	p.mu.Unlock()
}

// rearm asks for the next readable event of s's socket. It fails once the
// socket is closed: the descriptor number may already be another
// connection's, and must not be touched.
func (p *Poller) rearm(s *Session) error {
	var ctlErr error
	cerr := s.raw.Control(func(fd uintptr) {
		ev := pollEvent(int32(fd), s.pollGen)
		ctlErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	})
	if cerr != nil {
		return cerr
	}
	return ctlErr
}

// remove stops watching s's socket. It runs before the socket is closed;
// should the socket be closed already, the kernel has dropped the
// registration and the number is left alone.
func (p *Poller) remove(s *Session) {
	p.forget(s)
	_ = s.raw.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// claim returns the session an event is for, now marked as being read, or
// nil: the event is stale (its connection is gone, the number perhaps
// reused), or the session is being read already.
func (p *Poller) claim(ev syscall.EpollEvent) *Session {
	p.mu.RLock()
	s := p.conns[ev.Fd]
	p.mu.RUnlock()
	if s == nil || s.pollGen != uint32(ev.Pad) {
		return nil
	}
	if !s.reading.CompareAndSwap(false, true) {
		// EPOLLONESHOT and re-arming only after the read make this
		// impossible; should it happen, refusing is what keeps one frame
		// parser from having two readers.
		p.errors.Inc()
		p.log.Error("poller: event for a connection that is being read; refused", "fd", ev.Fd)
		return nil
	}
	return s
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
			if s := p.claim(ev); s != nil {
				go s.readable()
			}
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

// readNonblocking reads what the socket holds without waiting: n == 0 and
// err == nil means nothing more for now; io.EOF means the peer closed.
func readNonblocking(raw syscall.RawConn, buf []byte) (n int, err error) {
	var rerr error
	cerr := raw.Read(func(fd uintptr) bool {
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
		return 0, errEOF
	}
	return n, nil
}
