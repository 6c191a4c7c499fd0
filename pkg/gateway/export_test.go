package gateway

import "github.com/roomcast/roomcast/internal/uring"

// WithURingSetup returns o with io_uring_setup(2) replaced by setup, so
// that the external tests can refuse io_uring as seccomp would.
func WithURingSetup(o Options, setup uring.SetupFunc) Options {
	o.uringSetup = setup
	return o
}
