//go:build !linux

package main

import (
	"context"
	"errors"
	"io"
)

// runFloor: the floor is written for Linux (epoll, io_uring), where the
// gateway's own write paths are.
func runFloor(context.Context, []string, io.Writer) error {
	return errors.New("loadgen floor runs on Linux only")
}
