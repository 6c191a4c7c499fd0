//go:build !linux

package uring

import "fmt"

// Available reports that io_uring is Linux's alone.
func Available() error { return Probe(nil) }

// Probe reports that io_uring is Linux's alone.
func Probe(SetupFunc) error { return fmt.Errorf("%w: not Linux", ErrUnavailable) }
