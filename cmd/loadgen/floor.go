//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roomcast/roomcast/internal/uring"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// The floor is the least a program can do to serve the gateway's
// connections: the same WebSocket handshake at any path, the same NATS
// subscriptions (one per room, on the history stream, so the same seq and
// prev), each update encoded once as the gateway encodes it, and the same
// frame bytes on the wire, so loadgen's ordinary WebSocket clients run
// against it unchanged. What it does not do is the gateway's per-delivery
// Go work: there is no goroutine per connection or per delivery. One event
// loop per core owns its share of the sockets (non-blocking, in its own
// epoll) and, for each publication, writes the shared frame to every
// member it owns:
//
//   - mode write: one write(2) per member, in a loop over the room;
//   - mode uring: the same sends prepared as io_uring SENDs and handed to
//     the kernel together, one io_uring_enter per loop iteration (all the
//     publications that arrived since the last one: in W3T, the whole
//     tick).
//
// A socket that is full keeps what did not fit and takes further frames
// into a bounded queue; updates beyond it are dropped (the client sees
// gaps), as the gateway's conflation would. There are no pings, no
// metrics, no rate limits.

type floorConfig struct {
	listen string
	sourceConfig
	mode       string // "write" or "uring"
	loops      int    // event loops; 0 = one per CPU
	maxPending int    // bytes queued per connection while its socket is full
	ringSize   int    // io_uring SQ entries per loop
	sndbuf     int    // SO_SNDBUF of accepted sockets; 0 = the kernel's autotuning
	setup      uring.SetupFunc
}

func runFloor(ctx context.Context, args []string, stderr io.Writer) error {
	return runFloorWith(ctx, args, stderr, nil, nil)
}

// runFloorWith is runFloor with an injectable io_uring setup (tests
// refuse io_uring with it) and a callback that gets the listening address,
// the NATS URL and the mode it runs in.
func runFloorWith(ctx context.Context, args []string, stderr io.Writer, setup uring.SetupFunc, ready func(addr, nats, mode string)) error {
	fc := floorConfig{sourceConfig: defaultSource(), mode: "write", maxPending: 256 << 10, ringSize: 4096, setup: setup}
	fs := flag.NewFlagSet("loadgen floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&fc.listen, "listen", "127.0.0.1:9200", "TCP address for the WebSocket clients (any path)")
	fc.sourceConfig.flags(fs)
	fs.StringVar(&fc.mode, "mode", fc.mode, "write: one write(2) per delivery; uring: the deliveries of a loop iteration in one io_uring_enter (falls back to write if io_uring is refused)")
	fs.IntVar(&fc.loops, "loops", fc.loops, "event loops, each owning a share of the connections; 0 = one per CPU")
	fs.IntVar(&fc.maxPending, "max-pending", fc.maxPending, "bytes queued per connection while its socket is full; updates beyond are dropped")
	fs.IntVar(&fc.ringSize, "ring-size", fc.ringSize, "io_uring submission queue entries per loop")
	fs.IntVar(&fc.sndbuf, "sndbuf", fc.sndbuf, "SO_SNDBUF of the client sockets; 0 = the kernel's autotuning (tests make slow clients with it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fc.mode != "write" && fc.mode != "uring" {
		return fmt.Errorf("--mode must be write or uring, not %q", fc.mode)
	}
	if fc.loops <= 0 {
		fc.loops = runtime.GOMAXPROCS(0)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if _, err := raiseNoFile(); err != nil {
		log.Warn("cannot raise the open files limit", "err", err)
	}
	if fc.mode == "uring" {
		if err := uring.Probe(fc.setup); err != nil {
			// The fallback a gateway's writer would take too.
			log.Warn("io_uring refused, falling back to write(2)", "err", err)
			fc.mode = "write"
		}
	}
	src, err := startSource(ctx, fc.sourceConfig, "roomcast-floor", log)
	if err != nil {
		return err
	}
	defer src.close()
	lfd, addr, err := listenNonblock(fc.listen)
	if err != nil {
		return err
	}
	s := &floorServer{cfg: fc, src: src.rooms, log: log, rooms: map[string]*floorRoom{}}
	if err := s.startLoops(lfd); err != nil {
		unix.Close(lfd)
		return err
	}
	log.Info("floor listening", "addr", addr, "nats", src.addr, "pid", os.Getpid(), "mode", fc.mode, "loops", fc.loops, "history", fc.history)
	if ready != nil {
		ready(addr, src.addr, fc.mode)
	}
	<-ctx.Done()
	s.stop()
	unix.Close(lfd)
	return nil
}

// listenNonblock opens a non-blocking listening TCP socket that the event
// loops accept from.
func listenNonblock(addr string) (int, string, error) {
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return -1, "", err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, "", err
	}
	sa := &unix.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	if err := errors.Join(unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1), unix.Bind(fd, sa), unix.Listen(fd, 4096)); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("listen %s: %w", addr, err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	in := got.(*unix.SockaddrInet4)
	return fd, net.JoinHostPort(net.IP(in.Addr[:]).String(), fmt.Sprint(in.Port)), nil
}

type floorServer struct {
	cfg   floorConfig
	src   *broker.Rooms
	log   *slog.Logger
	loops []*floorLoop
	wg    sync.WaitGroup // the loops' goroutines

	mu    sync.Mutex
	rooms map[string]*floorRoom
}

// floorRoom is a room's NATS subscription, shared by the loops.
type floorRoom struct {
	name    string
	sub     broker.Subscription
	refs    int         // members over all loops; guarded by floorServer.mu
	closed  atomic.Bool // unsubscribed: loops drop what still arrives for it
	scratch bytes.Buffer
}

func (s *floorServer) startLoops(lfd int) error {
	for i := range s.cfg.loops {
		l, err := newFloorLoop(s, i)
		if err != nil {
			for _, l := range s.loops {
				l.closeFds()
			}
			return err
		}
		s.loops = append(s.loops, l)
	}
	// Loop 0 accepts and hands connections out round robin.
	if err := s.loops[0].watch(lfd, unix.EPOLLIN); err != nil {
		return err
	}
	s.loops[0].lfd = lfd
	for _, l := range s.loops {
		s.wg.Add(1)
		go func() { // a loop; ends when stop posts its end
			defer s.wg.Done()
			l.run()
		}()
	}
	return nil
}

// stop ends the loops (each closes its connections and ring) and waits.
func (s *floorServer) stop() {
	for _, l := range s.loops {
		l.post(floorPost{kind: postStop})
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, r := range s.rooms {
		_ = r.sub.Unsubscribe()
		delete(s.rooms, name)
	}
}

// ref takes a member for the room, subscribing on its first.
func (s *floorServer) ref(name string) (*floorRoom, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[name]
	if r == nil {
		r = &floorRoom{name: name}
		sub, err := s.src.Subscribe(name, func(d broker.Delivery) { s.deliver(r, d) })
		if err != nil {
			return nil, err
		}
		r.sub = sub
		s.rooms[name] = r
	}
	r.refs++
	return r, nil
}

// unref drops a member; the last one unsubscribes and tells the loops to
// forget the room.
func (s *floorServer) unref(r *floorRoom) {
	s.mu.Lock()
	r.refs--
	last := r.refs == 0
	if last {
		r.closed.Store(true)
		delete(s.rooms, r.name)
	}
	s.mu.Unlock()
	if last {
		_ = r.sub.Unsubscribe()
		for _, l := range s.loops {
			l.post(floorPost{kind: postDrop, room: r})
		}
	}
}

// deliver encodes the update once, as a complete WebSocket frame, and
// hands it to every loop; it runs on the room subscription's goroutine.
func (s *floorServer) deliver(r *floorRoom, d broker.Delivery) {
	r.scratch.Reset()
	if len(d.Payload) > s.cfg.maxUpdate || protocol.CompactPayload(&r.scratch, d.Payload) != nil {
		return
	}
	const room = 10 // the longest header; the frame starts where it fits
	buf := protocol.AppendUpdate(make([]byte, room, room+r.scratch.Len()+len(r.name)+96),
		protocol.Update{Room: r.name, Seq: d.Seq, Prev: d.Prev, Data: r.scratch.Bytes()})
	hdr := appendFrameHeader(make([]byte, 0, room), len(buf)-room)
	frame := buf[room-len(hdr):]
	copy(frame, hdr)
	for _, l := range s.loops {
		l.post(floorPost{kind: postUpdate, room: r, frame: frame})
	}
}

type postKind uint8

const (
	postUpdate postKind = iota // frame of room
	postConn                   // fd accepted by loop 0 for this loop
	postDrop                   // room unsubscribed
	postStop                   // end the loop
	postRearm                  // watch the listening socket again (loop 0)
)

type floorPost struct {
	kind  postKind
	room  *floorRoom
	frame []byte
	fd    int
}

// floorLoop is one event loop: an epoll over its sockets, an eventfd that
// other goroutines wake it with, and in uring mode a ring.
type floorLoop struct {
	id   int
	srv  *floorServer
	epfd int
	evfd int
	lfd  int // the listening socket, loop 0 only
	ring *uring.Ring

	mu       sync.Mutex
	inbox    []floorPost
	signaled bool // an eventfd write is pending
	dead     bool // the loop has ended: posts are dropped

	// Owned by the loop's goroutine.
	conns   map[int]*floorConn // by fd
	byID    map[uint64]*floorConn
	rooms   map[*floorRoom]*loopRoom
	nextID  uint64
	nextFor int // round robin of accepted connections
	ready   []*floorConn
	failed  []*floorConn
	cqes    []uring.CQE
	rbuf    []byte
	dropped uint64
}

// loopRoom is a room's members owned by one loop and the room's latest
// frame as this loop saw it: the snapshot a joiner gets, never older than
// the updates it gets next.
type loopRoom struct {
	members []*floorConn
	last    []byte
}

// remove takes c out of the members, if it is one (order does not matter:
// the last member takes its place).
func (r *loopRoom) remove(c *floorConn) {
	if i := slices.Index(r.members, c); i >= 0 {
		last := len(r.members) - 1
		r.members[i] = r.members[last]
		r.members[last] = nil
		r.members = r.members[:last]
	}
}

type connState uint8

const (
	stateHandshake connState = iota
	stateOpen
	stateClosing // close frame sent: flush, then close
)

type floorConn struct {
	fd     int
	id     uint64
	state  connState
	in     []byte // unparsed input
	rooms  map[string]*floorRoom
	closed bool
	failed bool // to be closed at the end of the loop iteration

	out    []byte // bytes waiting for the socket, whole frames after a partial one
	spare  []byte // out's other buffer in uring mode
	wantW  bool   // EPOLLOUT armed (write mode)
	flight []byte // uring: the buffer a send is working through
	sent   int    // of flight
	busy   bool   // uring: a send is in the ring
	owned  bool   // flight is this connection's buffer (else a shared frame)
	queued bool   // on the loop's ready list
}

func newFloorLoop(s *floorServer, id int) (*floorLoop, error) {
	l := &floorLoop{id: id, srv: s, epfd: -1, evfd: -1, lfd: -1, conns: map[int]*floorConn{}, byID: map[uint64]*floorConn{},
		rooms: map[*floorRoom]*loopRoom{}, rbuf: make([]byte, 16<<10)}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, err
	}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.closeFds()
		return nil, err
	}
	if err := l.watch(l.evfd, unix.EPOLLIN); err != nil {
		l.closeFds()
		return nil, err
	}
	if s.cfg.mode == "uring" {
		// A CQ larger than any loop's connections: with one send in
		// flight per connection, ErrBusy stays rare.
		l.ring, err = uring.New(uring.Config{Entries: uint32(s.cfg.ringSize), CQEntries: 32768, Setup: s.cfg.setup})
		if err != nil {
			l.closeFds()
			return nil, err
		}
		if err := l.watch(l.ring.Fd(), unix.EPOLLIN); err != nil {
			l.closeFds()
			return nil, err
		}
	}
	return l, nil
}

func (l *floorLoop) closeFds() {
	if l.ring != nil {
		_ = l.ring.Close()
		l.ring = nil
	}
	for _, fd := range []*int{&l.evfd, &l.epfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

func (l *floorLoop) watch(fd int, events uint32) error {
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)})
}

// post queues an item for the loop and wakes it (one eventfd write per
// batch of posts).
func (l *floorLoop) post(p floorPost) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		if p.kind == postConn {
			unix.Close(p.fd)
		}
		return
	}
	l.inbox = append(l.inbox, p)
	if !l.signaled {
		l.signaled = true
		var one = [8]byte{1}
		_, _ = unix.Write(l.evfd, one[:])
	}
}

func (l *floorLoop) run() {
	if l.ring != nil {
		// The ring's deferred work (a send that waited for space) runs on
		// the thread that submitted it: keep that one thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	events := make([]unix.EpollEvent, 256)
	var posts []floorPost
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			l.srv.log.Error("epoll_wait", "loop", l.id, "err", err)
			n = 0
		}
		stop := false
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			switch {
			case fd == l.evfd:
				var b [8]byte
				_, _ = unix.Read(l.evfd, b[:])
				l.mu.Lock()
				l.signaled = false
				posts, l.inbox = l.inbox, posts[:0]
				l.mu.Unlock()
				for i, p := range posts {
					stop = l.handlePost(p) || stop
					posts[i] = floorPost{}
				}
			case fd == l.lfd:
				l.accept()
			case l.ring != nil && fd == l.ring.Fd():
				l.reap(false)
			default:
				c := l.conns[fd]
				if c == nil {
					continue
				}
				if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					l.readConn(c)
				}
				if ev.Events&unix.EPOLLOUT != 0 && !c.dead() {
					l.flushWrite(c)
				}
			}
		}
		if l.ring != nil {
			l.flushRing()
		}
		l.closeFailed()
		if stop {
			l.end()
			return
		}
	}
}

// end closes the loop's connections and ring; posts after it are dropped.
func (l *floorLoop) end() {
	l.mu.Lock()
	l.dead = true
	for _, p := range l.inbox {
		if p.kind == postConn {
			unix.Close(p.fd)
		}
	}
	l.inbox = nil
	l.mu.Unlock()
	l.closeFailed()
	for _, c := range l.conns {
		l.closeConn(c)
	}
	l.closeFds() // the ring's Close cancels sends still in flight
	if l.dropped > 0 {
		l.srv.log.Info("floor loop ended", "loop", l.id, "dropped_updates", l.dropped)
	}
}

func (l *floorLoop) handlePost(p floorPost) (stop bool) {
	switch p.kind {
	case postUpdate:
		if p.room.closed.Load() {
			return false
		}
		lr := l.rooms[p.room]
		if lr == nil {
			lr = &loopRoom{}
			l.rooms[p.room] = lr
		}
		lr.last = p.frame
		for _, c := range lr.members {
			l.send(c, p.frame, true)
		}
	case postConn:
		l.addConn(p.fd)
	case postDrop:
		delete(l.rooms, p.room)
	case postStop:
		return true
	case postRearm:
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, l.lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.lfd)})
	}
	return false
}

func (l *floorLoop) accept() {
	for {
		fd, _, err := unix.Accept4(l.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			if !errors.Is(err, unix.EAGAIN) {
				// Out of descriptors (EMFILE): the listener stays readable, so
				// stop watching it for a while instead of spinning. The timer
				// ends once it has fired; a post to an ended loop is dropped.
				l.srv.log.Warn("accept", "err", err)
				_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, l.lfd, &unix.EpollEvent{Fd: int32(l.lfd)})
				time.AfterFunc(100*time.Millisecond, func() { l.post(floorPost{kind: postRearm}) })
			}
			return
		}
		to := l.srv.loops[l.nextFor%len(l.srv.loops)]
		l.nextFor++
		if to == l {
			l.addConn(fd)
		} else {
			to.post(floorPost{kind: postConn, fd: fd})
		}
	}
}

func (l *floorLoop) addConn(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) // as Go's net does
	if l.srv.cfg.sndbuf > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, l.srv.cfg.sndbuf)
	}
	if err := l.watch(fd, unix.EPOLLIN|unix.EPOLLRDHUP); err != nil {
		unix.Close(fd)
		return
	}
	l.nextID++
	c := &floorConn{fd: fd, id: l.nextID}
	l.conns[fd] = c
	l.byID[c.id] = c
}

// closeConn leaves the connection's rooms and closes it. In uring mode a
// send still in the ring keeps the socket's file open in the kernel, so
// the socket is shut down first: that ends the send (EPIPE), and its
// completion, found by id, is then dropped.
func (l *floorLoop) closeConn(c *floorConn) {
	if c.closed {
		return
	}
	c.closed = true
	for name, r := range c.rooms {
		if lr := l.rooms[r]; lr != nil {
			lr.remove(c)
		}
		delete(c.rooms, name)
		l.srv.unref(r)
	}
	delete(l.conns, c.fd)
	if c.busy {
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	} else {
		delete(l.byID, c.id)
	}
	unix.Close(c.fd) // also leaves the epoll
	c.out, c.spare, c.in = nil, nil, nil
}

// fail marks the connection to be closed at the end of the loop
// iteration: closing at once would change a room's member list while a
// publication walks it.
func (l *floorLoop) fail(c *floorConn) {
	if !c.dead() {
		c.failed = true
		l.failed = append(l.failed, c)
	}
}

func (c *floorConn) dead() bool { return c.closed || c.failed }

func (l *floorLoop) closeFailed() {
	for i, c := range l.failed {
		l.closeConn(c)
		l.failed[i] = nil
	}
	l.failed = l.failed[:0]
}

func (l *floorLoop) readConn(c *floorConn) {
	n, err := unix.Read(c.fd, l.rbuf)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		l.fail(c)
		return
	}
	if n == 0 {
		l.fail(c)
		return
	}
	c.in = append(c.in, l.rbuf[:n]...)
	if c.state == stateHandshake {
		if !l.handshake(c) {
			return
		}
	}
	l.frames(c)
	if len(c.in) == 0 {
		c.in = nil // idle connections hold no buffer
	}
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// handshake answers the HTTP upgrade once its header is complete; it
// reports whether the connection is open.
func (l *floorLoop) handshake(c *floorConn) bool {
	end := bytes.Index(c.in, []byte("\r\n\r\n"))
	if end < 0 {
		if len(c.in) > 8<<10 {
			l.fail(c)
		}
		return false
	}
	var key string
	for _, line := range strings.Split(string(c.in[:end]), "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), "Sec-WebSocket-Key") {
			key = strings.TrimSpace(v)
		}
	}
	if key == "" {
		l.send(c, []byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"), false)
		c.state = stateClosing
		l.closeIfFlushed(c)
		return false
	}
	h := sha1.Sum([]byte(key + wsGUID))
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(h[:]) + "\r\n\r\n"
	c.in = c.in[:copy(c.in, c.in[end+4:])]
	c.state = stateOpen
	l.send(c, []byte(resp), false)
	return !c.dead()
}

// frames handles the complete client frames in c.in: masked text frames
// carry commands; close is answered and ends the connection; ping gets a
// pong. Fragmented messages are not used by the load tool's clients and
// close the connection.
func (l *floorLoop) frames(c *floorConn) {
	for !c.dead() && c.state == stateOpen {
		b := c.in
		if len(b) < 2 {
			return
		}
		fin, op, masked := b[0]&0x80 != 0, b[0]&0x0f, b[1]&0x80 != 0
		n, h := int(b[1]&0x7f), 2
		switch n {
		case 126:
			if len(b) < 4 {
				return
			}
			n, h = int(b[2])<<8|int(b[3]), 4
		case 127:
			l.closeWith(c, 1009)
			return
		}
		if !masked || !fin {
			l.closeWith(c, 1002)
			return
		}
		if len(b) < h+4+n {
			return
		}
		mask, payload := b[h:h+4], b[h+4:h+4+n]
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
		switch op {
		case 0x1:
			l.command(c, payload)
		case 0x8:
			l.closeWith(c, 1000)
		case 0x9: // control frames carry at most 125 bytes
			l.send(c, append([]byte{0x8a, byte(len(payload))}, payload...), false)
		case 0xa:
		default:
			l.closeWith(c, 1003)
			return
		}
		if c.dead() {
			return
		}
		c.in = c.in[:copy(c.in, c.in[h+4+n:])]
	}
}

// closeWith sends a close frame with code and closes once it is written.
func (l *floorLoop) closeWith(c *floorConn, code int) {
	l.send(c, []byte{0x88, 2, byte(code >> 8), byte(code)}, false)
	c.state = stateClosing
	l.closeIfFlushed(c)
}

func (l *floorLoop) closeIfFlushed(c *floorConn) {
	if !c.dead() && c.state == stateClosing && len(c.out) == 0 && !c.busy {
		l.fail(c)
	}
}

func (l *floorLoop) command(c *floorConn, payload []byte) {
	cmd, perr := protocol.ParseCommand(bytes.TrimSpace(payload))
	var reply []byte
	switch {
	case perr != nil:
		reply = protocol.AppendError(nil, perr)
	case cmd.Op == protocol.OpJoin:
		if r := c.rooms[cmd.Room]; r != nil {
			l.reply(c, protocol.AppendJoined(nil, cmd.Room, cmd.ID, cmd.HasID))
			if lr := l.rooms[r]; lr != nil && lr.last != nil {
				l.send(c, lr.last, true)
			}
			return
		}
		r, err := l.srv.ref(cmd.Room)
		if err != nil {
			reply = protocol.AppendError(nil, &protocol.Error{Code: "internal", Message: err.Error(), Room: cmd.Room})
			break
		}
		if c.rooms == nil {
			c.rooms = map[string]*floorRoom{}
		}
		c.rooms[cmd.Room] = r
		lr := l.rooms[r]
		if lr == nil {
			lr = &loopRoom{}
			l.rooms[r] = lr
		}
		lr.members = append(lr.members, c)
		l.reply(c, protocol.AppendJoined(nil, cmd.Room, cmd.ID, cmd.HasID))
		if lr.last != nil {
			l.send(c, lr.last, true)
		}
		return
	default:
		if r := c.rooms[cmd.Room]; r != nil {
			if lr := l.rooms[r]; lr != nil {
				lr.remove(c)
			}
			delete(c.rooms, cmd.Room)
			l.srv.unref(r)
		}
		reply = protocol.AppendLeft(nil, cmd.Room, cmd.ID, cmd.HasID)
	}
	l.reply(c, reply)
}

// reply sends a JSON message as its own text frame.
func (l *floorLoop) reply(c *floorConn, msg []byte) {
	l.send(c, append(appendFrameHeader(make([]byte, 0, len(msg)+4), len(msg)), msg...), false)
}

// send writes a frame to the connection, or queues it behind what is
// waiting. An update that would take the queue past maxPending is dropped.
// The frame is not modified and, in uring mode, may be shared by many
// sends in flight at once.
func (l *floorLoop) send(c *floorConn, frame []byte, update bool) {
	if c.dead() {
		return
	}
	if l.ring != nil {
		if c.busy || len(c.out) > 0 {
			l.queue(c, frame, update)
			return
		}
		c.flight, c.sent, c.owned = frame, 0, false
		l.prepSend(c)
		return
	}
	if len(c.out) > 0 {
		l.queue(c, frame, update)
		return
	}
	n, err := writeRetry(c.fd, frame)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		l.fail(c)
		return
	}
	if n < len(frame) {
		c.out = append(c.out, frame[n:]...)
		l.armWrite(c)
	}
}

func writeRetry(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return max(n, 0), err
	}
}

func (l *floorLoop) queue(c *floorConn, frame []byte, update bool) {
	if update && len(c.out)+len(frame) > l.srv.cfg.maxPending {
		l.dropped++
		return
	}
	c.out = append(c.out, frame...)
}

func (l *floorLoop) armWrite(c *floorConn) {
	if c.wantW {
		return
	}
	c.wantW = true
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLOUT, Fd: int32(c.fd)})
}

// flushWrite writes what is waiting (write mode, socket writable).
func (l *floorLoop) flushWrite(c *floorConn) {
	if l.ring != nil { // a send refused with EAGAIN waited for this
		l.disarmWrite(c)
		l.markReady(c)
		return
	}
	if len(c.out) > 0 {
		n, err := writeRetry(c.fd, c.out)
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			l.fail(c)
			return
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	if len(c.out) == 0 && c.wantW {
		l.disarmWrite(c)
		l.closeIfFlushed(c)
	}
}

func (l *floorLoop) disarmWrite(c *floorConn) {
	if c.wantW {
		c.wantW = false
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)})
	}
}

// prepSend puts the rest of c.flight in the ring. A full submission queue
// is submitted; a ring with as many sends in flight as its CQ holds is
// reaped first.
func (l *floorLoop) prepSend(c *floorConn) {
	for {
		err := l.ring.Send(c.fd, c.flight[c.sent:], unix.MSG_NOSIGNAL, c.id)
		switch {
		case err == nil:
			c.busy = true
			return
		case errors.Is(err, uring.ErrSQFull):
			if _, err := l.ring.Submit(); err != nil {
				l.srv.log.Error("io_uring submit", "err", err)
				l.fail(c)
				return
			}
		case errors.Is(err, uring.ErrBusy):
			l.reap(true)
		default:
			l.fail(c)
			return
		}
	}
}

// reap handles the completions waiting (with wait, at least one): a
// connection whose send finished, or finished short, goes on the ready
// list; flushRing sends its rest.
func (l *floorLoop) reap(wait bool) {
	var err error
	if wait {
		l.cqes, err = l.ring.Wait(l.cqes[:0], 1)
		if err != nil {
			l.srv.log.Error("io_uring wait", "err", err)
		}
	} else {
		l.cqes = l.ring.Reap(l.cqes[:0])
	}
	for _, e := range l.cqes {
		c := l.byID[e.UserData]
		if c == nil {
			continue
		}
		c.busy = false
		if c.closed {
			delete(l.byID, c.id)
			continue
		}
		if c.failed {
			continue
		}
		if e.Res < 0 {
			if e.Res == -int32(unix.EAGAIN) {
				// Kernels that honour O_NONBLOCK for io_uring sends say
				// EAGAIN instead of waiting for space: wait for EPOLLOUT
				// (resubmitting at once would spin).
				l.armWrite(c)
				continue
			}
			if e.Res == -int32(unix.EINTR) {
				l.markReady(c)
				continue
			}
			l.fail(c)
			continue
		}
		c.sent += int(e.Res)
		if c.sent >= len(c.flight) {
			if c.owned {
				c.spare = c.flight[:0]
			}
			c.flight, c.sent = nil, 0
		}
		l.markReady(c)
	}
}

func (l *floorLoop) markReady(c *floorConn) {
	if !c.queued {
		c.queued = true
		l.ready = append(l.ready, c)
	}
}

// flushRing, at the end of a loop iteration, sends the rest of what the
// completions left and submits everything prepared in the iteration with
// one io_uring_enter; sends that complete at once are reaped and their
// connections' queues sent, until nothing is left to submit.
func (l *floorLoop) flushRing() {
	for {
		for i, c := range l.ready {
			l.ready[i] = nil
			c.queued = false
			if c.dead() || c.busy {
				continue
			}
			if c.flight == nil && len(c.out) > 0 {
				c.flight, c.sent, c.owned = c.out, 0, true
				c.out, c.spare = c.spare[:0], nil
			}
			if c.flight != nil {
				l.prepSend(c)
			} else {
				l.closeIfFlushed(c)
			}
		}
		l.ready = l.ready[:0]
		if l.ring.Unsubmitted() > 0 {
			if _, err := l.ring.Submit(); err != nil {
				l.srv.log.Error("io_uring submit", "err", err)
			}
		}
		l.reap(false)
		if len(l.ready) == 0 {
			return
		}
	}
}
