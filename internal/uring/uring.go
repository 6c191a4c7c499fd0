//go:build linux

package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Opcodes (include/uapi/linux/io_uring.h).
const (
	opNop         = 0
	opAsyncCancel = 14
	opWrite       = 23
	opSend        = 26
	opRecv        = 27
)

// Setup flags, features, enter flags and mmap offsets.
const (
	setupCQSize = 1 << 3
	setupClamp  = 1 << 4

	featSingleMmap = 1 << 0
	featNoDrop     = 1 << 1

	enterGetEvents = 1 << 0

	cancelAll = 1 << 0 // IORING_ASYNC_CANCEL_ALL
	cancelAny = 1 << 2 // IORING_ASYNC_CANCEL_ANY

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32 // rw_flags, msg_flags, …
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	pad         uint64
}

// cqe is struct io_uring_cqe (16 bytes, no IORING_SETUP_CQE32).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// CQE is one completion: the caller's user data, the result (bytes
// transferred, or a negated errno) and the kernel's flags.
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// Err returns the completion's error, or nil when Res is not negative.
func (c CQE) Err() error {
	if c.Res < 0 {
		return syscall.Errno(-c.Res)
	}
	return nil
}

// Setup is the real io_uring_setup(2).
func Setup(entries uint32, p *Params) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// Enter is the real io_uring_enter(2).
func Enter(fd int, toSubmit, minComplete, flags uint32) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// ErrSQFull is returned when every submission slot holds a prepared
// request: Submit, then prepare again.
var ErrSQFull = errors.New("io_uring: submission queue full")

// ErrBusy is returned when as many requests are in flight as the
// completion queue holds: reap completions (Wait), then prepare again.
var ErrBusy = errors.New("io_uring: completion queue would overflow")

// Config sizes a ring.
type Config struct {
	// Entries is the submission queue size (a power of two is granted;
	// the kernel clamps it to its maximum).
	Entries uint32
	// CQEntries is the completion queue size, and so the most requests
	// in flight at once; 0 is twice Entries, the kernel's default.
	CQEntries uint32
	// Setup replaces io_uring_setup(2); nil is the real one.
	Setup SetupFunc
	// Enter replaces io_uring_enter(2); nil is the real one.
	Enter EnterFunc
}

// Ring is one io_uring instance and its mapped queues.
type Ring struct {
	fd       int
	enterFn  EnterFunc
	features uint32
	sqMem    []byte
	cqMem    []byte // nil with IORING_FEAT_SINGLE_MMAP (same mapping as sqMem)
	sqeMem   []byte

	sqHead, sqTail, sqFlags *uint32 // shared with the kernel: atomic access
	sqMask, sqEntries       uint32
	sqArray                 []uint32
	sqes                    []sqe
	sqLocal                 uint32 // our tail, published to *sqTail at Submit

	cqHead, cqTail *uint32 // shared with the kernel: atomic access
	cqMask         uint32
	cqes           []cqe

	// slots keeps what the kernel may still use of each request in
	// flight: the caller's user data and the buffer. The SQE's user_data
	// is the slot's index. Holding the []byte here is what keeps a buffer
	// alive: the kernel only has its address (a uintptr, invisible to the
	// garbage collector), and for a send that waits for socket space it
	// reads the buffer long after io_uring_enter returned, so the
	// reference must live until the completion is reaped, not just until
	// the call returns (runtime.KeepAlive would not reach that far). Go's
	// heap does not move objects, and a slice stored here has escaped to
	// the heap, so its address stays valid.
	slots    []slot
	free     []uint32 // free slot indexes
	inFlight int      // prepared or submitted, not yet reaped

	cancelSlot int   // the slot of Close's cancellation, −1 when none
	cancelRes  int32 // its result, once reaped
}

type slot struct {
	userData uint64
	buf      []byte
}

// Probe reports whether io_uring can be set up with setup (nil: the real
// system call): nil, or an error wrapping ErrUnavailable that says why.
func Probe(setup SetupFunc) error {
	r, err := New(Config{Entries: 2, Setup: setup})
	if err != nil {
		return err
	}
	return r.Close()
}

// Available reports whether this kernel and process may use io_uring:
// nil, or an error wrapping ErrUnavailable. It sets up and closes a tiny
// ring, so it costs two system calls and two mmaps.
func Available() error { return Probe(nil) }

// New sets up a ring and maps its queues.
func New(cfg Config) (*Ring, error) {
	if cfg.Entries == 0 {
		return nil, errors.New("io_uring: Entries must be positive")
	}
	setup := cfg.Setup
	if setup == nil {
		setup = Setup
	}
	p := Params{Flags: setupClamp}
	if cfg.CQEntries > 0 {
		p.Flags |= setupCQSize
		p.CQEntries = cfg.CQEntries
	}
	fd, err := setup(cfg.Entries, &p)
	if err != nil {
		return nil, setupError(err)
	}
	r := &Ring{fd: fd, enterFn: cfg.Enter, features: p.Features, cancelSlot: -1}
	if r.enterFn == nil {
		r.enterFn = Enter
	}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, err
	}
	r.slots = make([]slot, len(r.cqes))
	r.free = make([]uint32, len(r.cqes))
	for i := range r.free {
		r.free[i] = uint32(len(r.free) - 1 - i)
	}
	return r, nil
}

// setupError says why io_uring_setup failed; the errors that mean "not
// here" wrap ErrUnavailable.
func setupError(err error) error {
	switch {
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%w: io_uring_setup: %w (kernel without io_uring, or seccomp)", ErrUnavailable, err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		why := "seccomp or permissions"
		if b, rerr := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); rerr == nil {
			if v := strings.TrimSpace(string(b)); v != "0" {
				why = "sysctl kernel.io_uring_disabled=" + v
			}
		}
		return fmt.Errorf("%w: io_uring_setup: %w (%s)", ErrUnavailable, err, why)
	}
	return fmt.Errorf("io_uring_setup: %w", err)
}

func (r *Ring) mmap(p *Params) error {
	sqSize := int(p.SQOff.Array + p.SQEntries*4)
	cqSize := int(p.CQOff.CQEs + p.CQEntries*uint32(unsafe.Sizeof(cqe{})))
	single := p.Features&featSingleMmap != 0
	if single {
		// One mapping holds both rings (kernel 5.4+): map the larger size.
		sqSize = max(sqSize, cqSize)
	}
	var err error
	r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("io_uring: mmap SQ ring: %w", err)
	}
	cqMem := r.sqMem
	if !single {
		r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("io_uring: mmap CQ ring: %w", err)
		}
		cqMem = r.cqMem
	}
	r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.SQEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("io_uring: mmap SQEs: %w", err)
	}
	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.sqHead, r.sqTail, r.sqFlags = u32(r.sqMem, p.SQOff.Head), u32(r.sqMem, p.SQOff.Tail), u32(r.sqMem, p.SQOff.Flags)
	r.sqMask, r.sqEntries = *u32(r.sqMem, p.SQOff.RingMask), *u32(r.sqMem, p.SQOff.RingEntries)
	r.sqArray = unsafe.Slice(u32(r.sqMem, p.SQOff.Array), r.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), r.sqEntries)
	r.sqLocal = atomic.LoadUint32(r.sqTail)
	r.cqHead, r.cqTail = u32(cqMem, p.CQOff.Head), u32(cqMem, p.CQOff.Tail)
	r.cqMask = *u32(cqMem, p.CQOff.RingMask)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&cqMem[p.CQOff.CQEs])), *u32(cqMem, p.CQOff.RingEntries))
	return nil
}

// Close cancels the requests still in flight and waits for their
// completions, so that the kernel no longer uses any buffer the ring was
// given (a RECV would otherwise write into memory the garbage collector
// may reuse), then unmaps the queues and closes the ring. A request the
// kernel cannot cancel (a disk write already under way) is waited for.
// Cancelling everything needs Linux 5.19; on older kernels Close returns
// an error when requests were still in flight, and callers should end
// them first (shut their sockets down and reap).
func (r *Ring) Close() error {
	var errs []error
	if r.sqes != nil && r.inFlight > 0 {
		errs = append(errs, r.cancelAll())
	}
	for _, m := range [][]byte{r.sqeMem, r.cqMem, r.sqMem} {
		if m != nil {
			errs = append(errs, unix.Munmap(m))
		}
	}
	r.sqeMem, r.cqMem, r.sqMem = nil, nil, nil
	r.sqes, r.sqArray, r.cqes = nil, nil, nil
	if r.fd >= 0 {
		errs = append(errs, unix.Close(r.fd))
		r.fd = -1
	}
	clear(r.slots)
	return errors.Join(errs...)
}

func (r *Ring) cancelAll() error {
	if _, err := r.Submit(); err != nil {
		return err
	}
	r.Reap(nil)
	if r.inFlight == 0 {
		return nil
	}
	e, err := r.nextSlot(0, nil, 0)
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.opFlags = opAsyncCancel, -1, cancelAll|cancelAny
	r.cancelSlot, r.cancelRes = int(e.userData), 0
	for r.inFlight > 0 {
		if _, err := r.Wait(nil, 1); err != nil {
			return err
		}
		// Kernels before 5.19 know no IORING_ASYNC_CANCEL_ANY (EINVAL):
		// stop waiting; closing the ring cancels the rest, after Close
		// returns. ENOENT means nothing was left to cancel.
		if res := r.cancelRes; res < 0 && res != -int32(unix.ENOENT) {
			return fmt.Errorf("io_uring: cancelling %d requests in flight: %w", r.inFlight, syscall.Errno(-res))
		}
	}
	return nil
}

// Fd is the ring's file descriptor. It polls readable (EPOLLIN) when
// completions are waiting, so an event loop can wait for them in epoll
// together with its sockets.
func (r *Ring) Fd() int { return r.fd }

// Features is what the kernel reported at setup (IORING_FEAT_*).
func (r *Ring) Features() uint32 { return r.features }

// SQEntries and CQEntries are the granted queue sizes; CQEntries is also
// the most requests in flight at once.
func (r *Ring) SQEntries() int { return len(r.sqes) }
func (r *Ring) CQEntries() int { return len(r.cqes) }

// MaxInFlight is how many requests may be in flight at once: the
// completion queue's size less one slot kept for Close. Preparing more
// returns ErrBusy, which is how the ring's completion queue is kept from
// overflowing (the kernel would then hold completions back, with
// IORING_FEAT_NODROP, or drop them, before it).
func (r *Ring) MaxInFlight() int { return len(r.slots) - 1 }

// InFlight is how many requests are prepared or submitted and not reaped.
func (r *Ring) InFlight() int { return r.inFlight }

// Unsubmitted is how many prepared requests the next Submit hands over.
func (r *Ring) Unsubmitted() int { return int(r.sqLocal - atomic.LoadUint32(r.sqHead)) }

// next returns a zeroed SQE for a new request, with its slot. The last
// free slot is kept for Close's cancellation.
func (r *Ring) next(userData uint64, buf []byte) (*sqe, error) {
	return r.nextSlot(userData, buf, 1)
}

func (r *Ring) nextSlot(userData uint64, buf []byte, keep int) (*sqe, error) {
	if r.sqLocal-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		return nil, ErrSQFull
	}
	if len(r.free) <= keep {
		return nil, ErrBusy
	}
	si := r.free[len(r.free)-1]
	r.free = r.free[:len(r.free)-1]
	r.slots[si] = slot{userData: userData, buf: buf}
	r.inFlight++
	idx := r.sqLocal & r.sqMask
	e := &r.sqes[idx]
	*e = sqe{userData: uint64(si)}
	r.sqArray[idx] = idx
	r.sqLocal++
	return e, nil
}

func bufAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// Nop prepares a request that does nothing and completes with 0.
func (r *Ring) Nop(userData uint64) error {
	e, err := r.next(userData, nil)
	if err != nil {
		return err
	}
	e.opcode, e.fd = opNop, -1
	return nil
}

// Write prepares write(2) of buf to fd at the file's position (offset −1,
// so a socket or pipe works). buf is kept referenced until the completion
// is reaped; the caller must not change it before then.
func (r *Ring) Write(fd int, buf []byte, userData uint64) error {
	e, err := r.next(userData, buf)
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.off, e.addr, e.len = opWrite, int32(fd), ^uint64(0), bufAddr(buf), uint32(len(buf))
	return nil
}

// Send prepares send(2) of buf on socket fd with msg flags (for example
// unix.MSG_WAITALL, so that a stream socket's send completes only when
// all of buf is sent, or unix.MSG_NOSIGNAL). buf is kept referenced until
// the completion is reaped; the caller must not change it before then.
func (r *Ring) Send(fd int, buf []byte, flags int, userData uint64) error {
	e, err := r.next(userData, buf)
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.addr, e.len, e.opFlags = opSend, int32(fd), bufAddr(buf), uint32(len(buf)), uint32(flags)
	return nil
}

// Recv prepares recv(2) into buf on socket fd. buf is kept referenced
// until the completion is reaped; the caller must not read it before.
func (r *Ring) Recv(fd int, buf []byte, flags int, userData uint64) error {
	e, err := r.next(userData, buf)
	if err != nil {
		return err
	}
	e.opcode, e.fd, e.addr, e.len, e.opFlags = opRecv, int32(fd), bufAddr(buf), uint32(len(buf)), uint32(flags)
	return nil
}

// CheckSendNoWait reports whether a SEND with MSG_DONTWAIT to a socket
// that has no room completes at once with EAGAIN, rather than waiting in
// the kernel for space. A writer that submits a batch of sends and waits
// for all their completions needs this: on a kernel that waited, one
// stalled client would hold up the batch. It sends on a full socket pair
// of its own; the ring must have nothing in flight.
func (r *Ring) CheckSendNoWait() error {
	if r.inFlight != 0 {
		return errors.New("io_uring: CheckSendNoWait with requests in flight")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("io_uring check: socketpair: %w", err)
	}
	defer unix.Close(fds[0])
	peerOpen := true
	defer func() {
		if peerOpen {
			unix.Close(fds[1])
		}
	}()
	_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		_, err := unix.Write(fds[0], buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("io_uring check: filling a socket: %w", err)
		}
		if i > 1<<16 {
			return errors.New("io_uring check: a socket that never fills")
		}
	}
	if err := r.Send(fds[0], buf, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0); err != nil {
		return err
	}
	if _, err := r.Submit(); err != nil {
		return err
	}
	c := r.Reap(nil)
	if len(c) == 1 {
		if c[0].Res == -int32(unix.EAGAIN) {
			return nil
		}
		return fmt.Errorf("io_uring check: a send to a full socket gave %d, not EAGAIN", c[0].Res)
	}
	// The send waits for space: closing the peer ends it (EPIPE).
	unix.Close(fds[1])
	peerOpen = false
	if _, err := r.Wait(nil, 1); err != nil {
		return err
	}
	return errors.New("io_uring sends to a full socket wait for space on this kernel, even with MSG_DONTWAIT")
}

// Submit hands every prepared request to the kernel with one
// io_uring_enter(2) and returns how many it took. Requests that can
// complete at once (a send with socket space) have usually completed when
// it returns; Reap collects them without a system call.
func (r *Ring) Submit() (int, error) { return r.enter(0) }

// SubmitAndWait submits like Submit and then waits until at least n
// completions are waiting to be reaped (n is capped at InFlight).
func (r *Ring) SubmitAndWait(n int) (int, error) { return r.enter(min(n, r.inFlight)) }

func (r *Ring) enter(wait int) (int, error) {
	// Publish the prepared SQEs: the store-release of the tail orders the
	// SQE and array writes before it, as the kernel's load-acquire expects.
	atomic.StoreUint32(r.sqTail, r.sqLocal)
	submitted := 0
	for {
		toSubmit := r.sqLocal - atomic.LoadUint32(r.sqHead)
		need, flags := uint32(0), uint32(0)
		if wait > 0 && r.ready() < wait {
			need, flags = uint32(wait), enterGetEvents
		}
		if toSubmit == 0 && need == 0 {
			return submitted, nil
		}
		n, err := r.enterFn(r.fd, toSubmit, need, flags)
		switch {
		case err == nil:
			submitted += n
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			// A signal (Go's preemption sends SIGURG) interrupted the
			// wait, or the kernel was short of memory: what was taken is
			// visible in the SQ head, so go round for the rest.
		default:
			return submitted, fmt.Errorf("io_uring_enter: %w", err)
		}
	}
}

// ready is how many completions wait in the CQ ring.
func (r *Ring) ready() int {
	return int(atomic.LoadUint32(r.cqTail) - atomic.LoadUint32(r.cqHead))
}

// Reap appends the completions waiting in the CQ ring to dst, frees their
// slots (and so releases their buffers) and returns dst. It makes no
// system call and does not wait.
func (r *Ring) Reap(dst []CQE) []CQE {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail) // load-acquire: the CQEs below are written
	for ; head != tail; head++ {
		c := r.cqes[head&r.cqMask]
		si := uint32(c.userData)
		if int(si) == r.cancelSlot {
			r.cancelSlot, r.cancelRes = -1, c.res
		} else {
			dst = append(dst, CQE{UserData: r.slots[si].userData, Res: c.res, Flags: c.flags})
		}
		r.slots[si] = slot{}
		r.free = append(r.free, si)
		r.inFlight--
	}
	atomic.StoreUint32(r.cqHead, head) // store-release: the slots may be reused
	return dst
}

// Wait submits what is prepared, waits for at least n completions and
// reaps every completion waiting, appending them to dst.
func (r *Ring) Wait(dst []CQE, n int) ([]CQE, error) {
	if _, err := r.SubmitAndWait(n); err != nil {
		return dst, err
	}
	return r.Reap(dst), nil
}
