// Package ratelimit is the token bucket that bounds what one client may
// ask for: its commands (pkg/ws) and its resumes (pkg/hub).
package ratelimit

import "time"

// Bucket allows Rate events per second on average, Burst at once. It has
// no lock: its owner serialises Take (one client's reader, or a lock).
type Bucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

// New returns a full bucket.
func New(rate float64, burst int, now time.Time) Bucket {
	return Bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// Take consumes one token if there is one. A clock that goes back
// changes nothing.
func (b *Bucket) Take(now time.Time) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
