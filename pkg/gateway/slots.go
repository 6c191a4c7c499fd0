package gateway

import (
	"net/netip"
	"sync"
)

// slots counts holders against a total and a per-address budget: the
// TCP connections of the listener, the connection slots of the admission
// and the Socket.IO sessions waiting for their token each have one. A
// zero slots is not usable; make them with newSlots.
type slots struct {
	max, maxPerAddr int

	mu      sync.Mutex // guards total and perAddr
	total   int
	perAddr map[netip.Addr]int
}

func newSlots(max, maxPerAddr int) *slots {
	return &slots{max: max, maxPerAddr: maxPerAddr, perAddr: map[netip.Addr]int{}}
}

// slotRefusal says which budget refused a take.
type slotRefusal uint8

const (
	slotTaken    slotRefusal = iota // not refused
	slotFull                        // the total is spent
	slotAddrFull                    // the address's share is spent
)

// take takes a slot for the address key (already reduced to its
// per-address form); without perAddr it counts in the total only.
func (s *slots) take(key netip.Addr, perAddr bool) slotRefusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= s.max {
		return slotFull
	}
	if perAddr {
		if s.perAddr[key] >= s.maxPerAddr {
			return slotAddrFull
		}
		s.perAddr[key]++
	}
	s.total++
	return slotTaken
}

// release gives back a slot taken with the same key and perAddr.
func (s *slots) release(key netip.Addr, perAddr bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if !perAddr {
		return
	}
	if n := s.perAddr[key] - 1; n > 0 {
		s.perAddr[key] = n
	} else {
		delete(s.perAddr, key)
	}
}
