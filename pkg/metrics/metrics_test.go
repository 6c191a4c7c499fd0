package metrics

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/roomcast/roomcast/pkg/outbox"
)

func TestObserveSentKeepsReplaysApart(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry())
	now := time.UnixMilli(1_000_000)
	live := func(ts int64) outbox.Message {
		return outbox.Message{Pub: outbox.NewPublication("r", 1, 0, false, []byte(`{}`), ts)}
	}
	replay := func(ts int64) outbox.Message {
		msg := live(ts)
		msg.Replay = true
		return msg
	}
	snapshot := func(ts int64) outbox.Message {
		msg := live(ts)
		msg.Snapshot = true
		return msg
	}
	// A frame with an update replayed 30 s old and two live updates 2 and
	// 5 ms old: latency 5 ms, replay age 30 s.
	m.ObserveSent(now, []outbox.Message{replay(now.UnixMilli() - 30_000), live(now.UnixMilli() - 2), live(now.UnixMilli() - 5), {Reply: &outbox.Reply{Kind: outbox.Left}}})
	// A reply alone: nothing observed.
	m.ObserveSent(now, []outbox.Message{{Reply: &outbox.Reply{Kind: outbox.Joined, Room: "r"}}})
	// A joiner's snapshot 10 s old after its joined reply, and a live
	// update 3 ms old: latency 3 ms, age 10 s.
	m.ObserveSent(now, []outbox.Message{{Reply: &outbox.Reply{Kind: outbox.Joined, Room: "r"}}, snapshot(now.UnixMilli() - 10_000), live(now.UnixMilli() - 3)})
	// A snapshot alone, 1 s old: age only.
	m.ObserveSent(now, []outbox.Message{snapshot(now.UnixMilli() - 1_000)})
	check := func(h prometheus.Histogram, count uint64, sum float64) {
		t.Helper()
		var pb dto.Metric
		if err := h.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetHistogram(); got.GetSampleCount() != count || math.Abs(got.GetSampleSum()-sum) > 1e-9 {
			t.Errorf("%s: count %d sum %v, want %d and %v", h.Desc(), got.GetSampleCount(), got.GetSampleSum(), count, sum)
		}
	}
	check(m.PublishToSend, 2, 0.005+0.003)
	check(m.ReplayAge, 3, 30+10+1)
}

func TestDisconnectedBoundsLabels(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg)
	series := func() int {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "roomcast_disconnects_total" {
				return len(mf.GetMetric())
			}
		}
		return 0
	}
	m.Disconnected(1000, true)
	m.Disconnected(1012, false)
	m.Disconnected(4321, false) // a code the gateway never sends
	m.Disconnected(4999, true)
	before := series()
	for code := 3000; code < 5000; code++ {
		m.Disconnected(code, true)
	}
	if after := series(); after != before {
		t.Errorf("series %d → %d: a client's codes must not grow the label set", before, after)
	}
	for _, c := range []struct {
		code, by string
		want     float64
	}{{"other", ByClient, 2001}, {"1000", ByClient, 1}, {"1012", ByServer, 1}, {"other", ByServer, 1}} {
		var pb dto.Metric
		if err := m.Disconnects.WithLabelValues(c.code, c.by).Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetCounter().GetValue(); got != c.want {
			t.Errorf("disconnects{code=%s,by=%s} = %v, want %v", c.code, c.by, got, c.want)
		}
	}
}
