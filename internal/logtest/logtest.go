// Package logtest collects what a component logs, for tests that check
// what it said: a slog text logger over a buffer that many goroutines
// may write while the test reads it. The buffer also keeps the output of
// the commands tests start (roomtest.Process).
package logtest

import (
	"log/slog"
	"strings"
	"sync"
)

// Buffer is an io.Writer safe for concurrent use whose contents can be
// read at any time.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// New returns a text logger (Info and above) and the buffer it writes
// to.
func New() (*slog.Logger, *Buffer) {
	b := &Buffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
