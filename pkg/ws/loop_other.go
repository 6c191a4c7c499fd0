//go:build !linux

package ws

import (
	"errors"
	"log/slog"
	"syscall"
	"time"

	"github.com/roomcast/roomcast/internal/uring"
)

// Writer is Linux-only (non-blocking writes resumed by epoll); elsewhere
// NewWriter fails and every session keeps the writer goroutine.
type Writer struct{}

// WriterConfig tunes a Writer (see the Linux build).
type WriterConfig struct {
	Loops         int
	CoalesceDelay time.Duration
	URing         string
	URingSetup    uring.SetupFunc
	URingEnter    uring.EnterFunc
}

// The paths a Writer writes by.
const (
	PathURing = "io_uring"
	PathWrite = "write"
)

// Path is empty: there is no writer.
func (w *Writer) Path() string { return "" }

// RingStats is zero: there is no writer.
func (w *Writer) RingStats() (sends, submissions uint64) { return 0, 0 }

// RingFailures is zero: there is no writer.
func (w *Writer) RingFailures() int { return 0 }

// NewWriter reports that this system has no loop writer.
func NewWriter(*slog.Logger, WriterConfig) (*Writer, error) {
	return nil, errors.New("no event-loop writer on this system")
}

// Close does nothing.
func (w *Writer) Close() {}

func (w *Writer) assign() *evloop    { return nil }
func (w *Writer) arm(*Session) error { return errors.New("no loop writer") }
func (w *Writer) forget(*Session)    {}
func (l *evloop) schedule(*Session)  {}
func (l *evloop) write(*Session) (int, error, bool) {
	return 0, errors.New("no loop writer"), false
}
func writeNow(syscall.RawConn, []byte) (int, error) {
	return 0, errors.New("no loop writer")
}

type evloop struct{ w *Writer }
