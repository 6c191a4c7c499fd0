package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomcast/roomcast/pkg/metrics"
)

// failingListener fails n accepts with EMFILE, then reports itself closed.
type failingListener struct {
	net.Listener
	n int
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.n > 0 {
		l.n--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return nil, net.ErrClosed
}

// countingHandler counts the records at warn.
type countingHandler struct{ warns atomic.Int32 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestAcceptErrors: failed accepts are returned to net/http (which backs
// off), each counted, and warned about once per acceptWarnEvery.
func TestAcceptErrors(t *testing.T) {
	h := &countingHandler{}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	l := &limitListener{
		Listener: &failingListener{n: 100}, slots: newSlots(10, 10),
		key: func(a netip.Addr) netip.Addr { return a }, exempt: func(netip.Addr) bool { return false },
		metrics: m, log: slog.New(h),
	}
	for range 100 {
		if _, err := l.Accept(); !errors.Is(err, syscall.EMFILE) {
			t.Fatalf("accept: %v, want EMFILE", err)
		}
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "roomcast_accept_errors_total" {
			got = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got != 100 {
		t.Errorf("roomcast_accept_errors_total = %v, want 100", got)
	}
	if got := h.warns.Load(); got != 1 {
		t.Errorf("%d warnings for 100 failed accepts in a burst, want 1", got)
	}
}
