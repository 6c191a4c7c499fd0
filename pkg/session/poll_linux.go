//go:build linux

package session

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
)

// Poller watches the sockets of idle connections with one epoll instance
// and one goroutine, so that a connection waiting for its client's next
// command holds no goroutine and no read buffer. When a socket becomes
// readable, a short-lived goroutine reads what arrived, runs the commands
// and re-arms the socket (EPOLLONESHOT: one event, one reader, no race).
//
// Lifetime: NewPoller starts the goroutine; Close ends it after the
// gateway's sessions are gone.
type Poller struct {
	epfd int
	wake [2]int // a pipe: Close writes to end EpollWait

	mu    sync.RWMutex
	conns map[int32]*Session

	done chan struct{}
}

// NewPoller starts a poller; on error the caller falls back to a reader
// goroutine per connection.
func NewPoller() (*Poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &Poller{epfd: epfd, conns: make(map[int32]*Session), done: make(chan struct{})}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll wake pipe: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: -1}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	go p.run()
	return p, nil
}

func (p *Poller) closeFDs() {
	syscall.Close(p.epfd)
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
}

// Close stops the poller. Sessions still registered are not closed.
func (p *Poller) Close() {
	_, _ = syscall.Write(p.wake[1], []byte{0})
	<-p.done
	p.closeFDs()
}

const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

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
	var fd int
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return err
	}
	s.raw, s.fd = raw, fd
	p.mu.Lock()
	p.conns[int32(fd)] = s
	p.mu.Unlock()
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.conns, int32(fd))
		p.mu.Unlock()
		return err
	}
	return nil
}

// rearm asks for the next readable event of s's socket.
func (p *Poller) rearm(s *Session) error {
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(s.fd)}
	return syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, s.fd, &ev)
}

// remove stops watching s's socket; it must run before the socket is
// closed, so that its descriptor number, once reused, is not s's.
func (p *Poller) remove(s *Session) {
	p.mu.Lock()
	if p.conns[int32(s.fd)] == s {
		delete(p.conns, int32(s.fd))
	}
	p.mu.Unlock()
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, s.fd, nil)
}

func (p *Poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == -1 {
				return
			}
			p.mu.RLock()
			s := p.conns[ev.Fd]
			p.mu.RUnlock()
			if s != nil {
				go s.readable()
			}
		}
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
