// Package uring is a small io_uring binding for roomcast's write paths:
// set up a ring, prepare NOP, WRITE, SEND and RECV requests, submit many
// with one io_uring_enter(2), and reap their completions. It exists so that
// a writer can hand the kernel all the sends of a tick in one system call
// instead of one write(2) each; Available tells callers whether the kernel
// allows io_uring at all (seccomp, sysctl kernel.io_uring_disabled), so
// they can fall back to plain writes.
//
// A Ring is not safe for concurrent use: one goroutine owns it (prepares,
// submits, reaps and closes). The package keeps every buffer handed to the
// kernel referenced until its completion has been reaped, and never lets
// more requests be in flight than the completion queue holds, so the
// completion queue cannot overflow.
package uring

import "errors"

// Params is struct io_uring_params: the ring sizes asked for and, after
// setup, those granted and where the rings lie in the mmaps.
type Params struct {
	SQEntries    uint32
	CQEntries    uint32
	Flags        uint32
	SQThreadCPU  uint32
	SQThreadIdle uint32
	Features     uint32
	WQFd         uint32
	resv         [3]uint32
	SQOff        SQRingOffsets
	CQOff        CQRingOffsets
}

// SQRingOffsets is struct io_sqring_offsets.
type SQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, resv1 uint32
	UserAddr                                                        uint64
}

// CQRingOffsets is struct io_cqring_offsets.
type CQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, resv1 uint32
	UserAddr                                                        uint64
}

// SetupFunc is io_uring_setup(2). Config.Setup lets tests (and callers'
// tests) inject a kernel that refuses io_uring.
type SetupFunc func(entries uint32, p *Params) (fd int, err error)

// EnterFunc is io_uring_enter(2) as a ring calls it: submit toSubmit
// prepared requests and, with flags IORING_ENTER_GETEVENTS, wait for
// minComplete completions; it returns how many requests the kernel took,
// or the errno. Config.Enter lets tests make a ring fail as a kernel
// could (its callers' failure paths are otherwise unreachable).
type EnterFunc func(fd int, toSubmit, minComplete, flags uint32) (int, error)

// ErrUnavailable is wrapped by New's and Probe's error when the kernel
// does not allow io_uring here (no such system call, refused by seccomp,
// or disabled by sysctl kernel.io_uring_disabled): callers fall back to
// plain system calls.
var ErrUnavailable = errors.New("io_uring unavailable")
