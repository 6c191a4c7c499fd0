package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// resultPrefix starts the JSON line, so that it can be grepped out of a
// log: grep '^LOADGEN_RESULT ' run.log | cut -d' ' -f2- | jq .
const resultPrefix = "LOADGEN_RESULT "

// Result is the report of one run; its JSON form is the machine-readable
// line.
type Result struct {
	Workload     string  `json:"workload"`
	Mode         string  `json:"mode"` // websocket or raw
	Date         string  `json:"date"`
	Host         string  `json:"host"`
	CPUs         int     `json:"cpus"`
	Conns        int     `json:"conns"`
	Rooms        int     `json:"rooms"`
	RoomsPerConn int     `json:"rooms_per_conn"`
	Hz           float64 `json:"hz"`
	Stagger      bool    `json:"stagger,omitempty"` // rooms published evenly over the interval, not in one tick
	Churn        bool    `json:"churn,omitempty"`
	Reconnect    float64 `json:"reconnect_per_min,omitempty"`

	Established int     `json:"established"`
	Failed      int     `json:"failed"`
	Open        int     `json:"open_at_end"`
	DialSeconds float64 `json:"dial_s"`
	Window      float64 `json:"window_s"`

	Deliveries     uint64  `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	Expected       uint64  `json:"expected_deliveries"` // published in the window × members
	DeliveryRatio  float64 `json:"delivery_ratio"`
	Replayed       uint64  `json:"replayed"`
	Gaps           uint64  `json:"gaps"`
	Dups           uint64  `json:"dups"`
	NoSeq          uint64  `json:"no_seq"`
	MsgsPerFrame   float64 `json:"msgs_per_frame"`

	Latency Latency `json:"latency_ms"`

	Joined     uint64            `json:"joined"`        // joined replies in the window
	Left       uint64            `json:"left"`          // left replies in the window
	Ops        uint64            `json:"ops,omitempty"` // churn: joined + left replies in the window
	OpsPerS    float64           `json:"ops_per_s,omitempty"`
	Reconnects uint64            `json:"reconnects,omitempty"`
	Errors     map[string]uint64 `json:"errors"`
	Disconnect map[string]uint64 `json:"disconnects"`

	ClientCPU float64 `json:"client_cpu_s"` // loadgen processes' CPU in the window

	Server  Server   `json:"server"`
	Samples []sample `json:"samples,omitempty"`
	Trend   *Trend   `json:"trend,omitempty"`
}

// Latency is receive time minus the update's tsn (or ts), in ms, of live
// updates in the window.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// Server is what was measured of the server process (--pid) and its
// /metrics.
type Server struct {
	PID            int     `json:"pid,omitempty"`
	CPUSeconds     float64 `json:"cpu_s"`
	CPUPerDelivery float64 `json:"cpu_us_per_delivery"`
	CPUPerOp       float64 `json:"cpu_us_per_op,omitempty"`
	CPUUtil        float64 `json:"cpu_cores"` // average cores busy in the window
	XRaw           float64 `json:"x_raw,omitempty"`
	XFloor         float64 `json:"x_floor,omitempty"`     // CPU per delivery (per op in churn) ÷ the floor's
	XFloorRSS      float64 `json:"x_floor_rss,omitempty"` // RSS per connection ÷ the floor's (with --floor-run)
	RSSBefore      int64   `json:"rss_before_bytes"`
	RSSConnected   int64   `json:"rss_connected_bytes"`
	RSSEnd         int64   `json:"rss_end_bytes"`
	RSSPerConn     float64 `json:"rss_per_conn_bytes"`
	Threads        int     `json:"threads"`
	Goroutines     float64 `json:"goroutines,omitempty"`
	// Goroutines before connecting and after --settle, and their
	// difference per established connection: what an idle connection
	// costs in goroutines (W1).
	GoroutinesBefore    float64 `json:"goroutines_before,omitempty"`
	GoroutinesConnected float64 `json:"goroutines_connected,omitempty"`
	GoroutinesPerConn   float64 `json:"goroutines_per_conn"`
	MsgsPerFrame        float64 `json:"msgs_per_frame,omitempty"`   // roomcast_messages_sent / frames_sent in the window
	Deliveries          float64 `json:"deliveries,omitempty"`       // roomcast_deliveries_total in the window
	SubsBefore          float64 `json:"nats_subs_before,omitempty"` // before connecting
	SubsConnected       float64 `json:"nats_subs_connected,omitempty"`
	SubsWindowStart     float64 `json:"nats_subs_window_start,omitempty"`
	SubsWindowEnd       float64 `json:"nats_subs_window_end,omitempty"`
	SubsMin             float64 `json:"nats_subs_min,omitempty"` // over the samples
	SubsMax             float64 `json:"nats_subs_max,omitempty"`
	SlowDisconnects     float64 `json:"slow_disconnects,omitempty"`
	Conflated           float64 `json:"conflated,omitempty"`
}

// Trend is the least-squares slope of the samples: flat is what a soak
// wants.
type Trend struct {
	RSSPerMin        float64 `json:"rss_bytes_per_min"`
	ThreadsPerMin    float64 `json:"threads_per_min"`
	GoroutinesPerMin float64 `json:"goroutines_per_min,omitempty"`
	RSSFirst         int64   `json:"rss_first_bytes"`
	RSSLast          int64   `json:"rss_last_bytes"`
	// The same slopes over the window's second half only: a soak's
	// first minutes include the heap and the stream's caches growing
	// to their working size, which the whole-window slope mixes in.
	RSSPerMinLate       float64 `json:"rss_bytes_per_min_second_half"`
	HeapInusePerMinLate float64 `json:"heap_inuse_bytes_per_min_second_half,omitempty"`
}

func newResult(cfg Config) *Result {
	host, _ := os.Hostname()
	r := &Result{
		Workload: cfg.Workload, Mode: "websocket", Date: time.Now().UTC().Format(time.RFC3339), Host: host,
		CPUs: runtime.NumCPU(), Conns: cfg.Conns, Rooms: cfg.Rooms, RoomsPerConn: cfg.RoomsPerConn, Hz: cfg.Hz,
		Churn: cfg.Churn, Reconnect: cfg.Reconnect, Stagger: cfg.Stagger,
	}
	if cfg.Raw {
		r.Mode = "raw"
	}
	if cfg.SocketIO != "" {
		r.Mode = "socketio-" + cfg.SocketIO
	}
	r.Server.PID = cfg.PID
	return r
}

func (r *Result) fill(cfg *Config, st Stats, window time.Duration, published []uint64, selfCPU float64) {
	r.Window = window.Seconds()
	r.Open = st.Open
	r.Deliveries = st.Deliveries
	r.DeliveriesPerS = float64(st.Deliveries) / r.Window
	if !cfg.Churn {
		for i, m := range cfg.members() {
			if i < len(published) {
				r.Expected += published[i] * uint64(m)
			}
		}
		if r.Expected > 0 {
			r.DeliveryRatio = float64(st.Deliveries) / float64(r.Expected)
		}
	}
	r.Replayed, r.Gaps, r.Dups, r.NoSeq = st.Replayed, st.Gaps, st.Dups, st.NoSeq
	if st.Frames > 0 {
		r.MsgsPerFrame = float64(st.FrameMsgs) / float64(st.Frames)
	}
	h := make([]uint64, histBuckets)
	dense(st.Hist, h)
	ms := func(ns uint64) float64 { return float64(ns) / 1e6 }
	// A bucket's middle may lie above the largest value seen.
	q := func(x float64) float64 { return ms(min(quantile(h, x), st.LatMaxNs)) }
	r.Latency = Latency{Count: st.LatCount, P50: q(.5), P90: q(.9), P99: q(.99), P999: q(.999), Max: ms(st.LatMaxNs)}
	if st.LatCount > 0 {
		r.Latency.Mean = ms(st.LatSumNs / st.LatCount)
	}
	r.Joined, r.Left = st.Joined, st.Left
	if cfg.Churn {
		r.Ops = st.Joined + st.Left
		r.OpsPerS = float64(r.Ops) / r.Window
	}
	r.Reconnects = st.Reconnects
	r.Errors, r.Disconnect = st.Errors, st.Disconnects
	if r.Errors == nil {
		r.Errors = map[string]uint64{}
	}
	if r.Disconnect == nil {
		r.Disconnect = map[string]uint64{}
	}
	// Worker processes report their own CPU; an in-process worker's is
	// this process's, which also covers the publisher.
	r.ClientCPU = selfCPU
	if cfg.workers() > 1 {
		r.ClientCPU += st.CPUSeconds
	}
}

func (r *Result) serverCosts(cfg *Config) {
	s := &r.Server
	s.CPUUtil = s.CPUSeconds / r.Window
	if r.Deliveries > 0 {
		s.CPUPerDelivery = s.CPUSeconds * 1e6 / float64(r.Deliveries)
		if cfg.Baseline > 0 {
			s.XRaw = s.CPUPerDelivery / cfg.Baseline
		}
	}
	if r.Ops > 0 {
		s.CPUPerOp = s.CPUSeconds * 1e6 / float64(r.Ops)
	}
	floor, floorRSS := cfg.Floor, 0.0
	if cfg.floorResult != nil {
		fr := cfg.floorResult.Server
		floor, floorRSS = fr.CPUPerDelivery, fr.RSSPerConn
		if cfg.Churn {
			floor = fr.CPUPerOp
		}
	}
	cost := s.CPUPerDelivery
	if cfg.Churn {
		cost = s.CPUPerOp
	}
	if floor > 0 && cost > 0 {
		s.XFloor = cost / floor
	}
	if floorRSS > 0 && s.RSSPerConn > 0 {
		s.XFloorRSS = s.RSSPerConn / floorRSS
	}
}

// readFloorRun reads the result of a run against the floor from its
// output (the LOADGEN_RESULT line) or from the bare JSON line.
func readFloorRun(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := string(b)
	if !strings.Contains(out, resultPrefix) {
		out = resultPrefix + strings.TrimSpace(out)
	}
	for line := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(line, resultPrefix); ok {
			var res Result
			if err := json.Unmarshal([]byte(rest), &res); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return &res, nil
		}
	}
	return nil, fmt.Errorf("%s: no result line", path)
}

// metrics takes what the gateway's /metrics says: before connecting,
// connected, window start and end.
func (r *Result) metrics(before, connected, start, end map[string]float64) {
	s := &r.Server
	s.SubsBefore = before["roomcast_nats_subscriptions"]
	s.SubsConnected = connected["roomcast_nats_subscriptions"]
	s.SubsWindowStart = start["roomcast_nats_subscriptions"]
	s.SubsWindowEnd = end["roomcast_nats_subscriptions"]
	if start == nil || end == nil {
		return
	}
	d := func(k string) float64 { return end[k] - start[k] }
	if f := d("roomcast_frames_sent_total"); f > 0 {
		s.MsgsPerFrame = d("roomcast_messages_sent_total") / f
	}
	s.Deliveries = d("roomcast_deliveries_total")
	s.SlowDisconnects = d("roomcast_slow_disconnects_total")
	s.Conflated = d("roomcast_conflated_total")
	if g := goroutines(end); g > 0 {
		s.Goroutines = g
	}
}

func (r *Result) trend() {
	if len(r.Samples) == 0 {
		return
	}
	s := &r.Server
	first := true
	for _, x := range r.Samples {
		if !x.Scraped {
			continue
		}
		if first {
			s.SubsMin, s.SubsMax, first = x.Subscriptions, x.Subscriptions, false
		}
		s.SubsMin, s.SubsMax = min(s.SubsMin, x.Subscriptions), max(s.SubsMax, x.Subscriptions)
	}
	if len(r.Samples) < 3 {
		return
	}
	half := r.Samples[len(r.Samples)-1].T / 2
	slopeFrom := func(from float64, y func(sample) float64, scraped bool) float64 {
		var n, sx, sy, sxx, sxy float64
		for _, x := range r.Samples {
			if (scraped && !x.Scraped) || x.T < from {
				continue
			}
			t, v := x.T/60, y(x)
			n++
			sx += t
			sy += v
			sxx += t * t
			sxy += t * v
		}
		if den := n*sxx - sx*sx; den != 0 {
			return (n*sxy - sx*sy) / den
		}
		return 0
	}
	slope := func(y func(sample) float64, scraped bool) float64 { return slopeFrom(0, y, scraped) }
	rss := func(x sample) float64 { return float64(x.RSS) }
	r.Trend = &Trend{
		RSSPerMin:           slope(rss, false),
		ThreadsPerMin:       slope(func(x sample) float64 { return float64(x.Threads) }, false),
		GoroutinesPerMin:    slope(func(x sample) float64 { return x.Goroutines }, true),
		RSSFirst:            r.Samples[0].RSS,
		RSSLast:             r.Samples[len(r.Samples)-1].RSS,
		RSSPerMinLate:       slopeFrom(half, rss, false),
		HeapInusePerMinLate: slopeFrom(half, func(x sample) float64 { return x.HeapInuse }, true),
	}
}

func (r *Result) print(w io.Writer, quiet bool) {
	if !quiet {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
		row("workload", "%s (%s), %d conns, %d rooms, %d rooms/conn, %g Hz%s%s", r.Workload, r.Mode, r.Conns, r.Rooms, r.RoomsPerConn, r.Hz,
			map[bool]string{true: " staggered"}[r.Stagger], map[bool]string{true: ", churn"}[r.Churn])
		row("connections", "%d established, %d failed, %d open at end (dial %.1fs)", r.Established, r.Failed, r.Open, r.DialSeconds)
		row("window", "%.1fs", r.Window)
		row("deliveries", "%d (%.0f/s), expected %d (ratio %.4f), replayed %d", r.Deliveries, r.DeliveriesPerS, r.Expected, r.DeliveryRatio, r.Replayed)
		row("latency ms", "p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.P999, r.Latency.Max, r.Latency.Mean)
		row("gaps / dups", "%d / %d (updates without seq: %d)", r.Gaps, r.Dups, r.NoSeq)
		row("msgs per frame", "%.2f (client), %s (server's /metrics)", r.MsgsPerFrame, orNA(r.Server.MsgsPerFrame, "%.2f"))
		if r.Churn {
			row("churn ops", "%d (%.0f/s): %d joined, %d left", r.Ops, r.OpsPerS, r.Joined, r.Left)
		}
		if r.Reconnects > 0 {
			row("reconnects", "%d", r.Reconnects)
		}
		row("errors", "%s", fmtMap(r.Errors))
		row("disconnects", "%s", fmtMap(r.Disconnect))
		row("client cpu", "%.2fs (%.2f cores)", r.ClientCPU, r.ClientCPU/r.Window)
		if s := r.Server; s.PID > 0 {
			if r.Churn {
				row("server cpu", "%.2fs (%.2f cores), %.2f µs/op%s", s.CPUSeconds, s.CPUUtil, s.CPUPerOp, ratio(s.XFloor, "floor"))
			} else {
				row("server cpu", "%.2fs (%.2f cores), %.3f µs/delivery%s%s", s.CPUSeconds, s.CPUUtil, s.CPUPerDelivery, xraw(s.XRaw), ratio(s.XFloor, "floor"))
			}
			row("server rss", "%.1f MiB before, %.1f MiB connected, %.1f MiB end; %.0f bytes (%.2f KiB) per connection%s",
				mib(s.RSSBefore), mib(s.RSSConnected), mib(s.RSSEnd), s.RSSPerConn, s.RSSPerConn/1024, ratio(s.XFloorRSS, "floor"))
			row("server threads", "%d; goroutines %s", s.Threads, orNA(s.Goroutines, "%.0f"))
			if s.GoroutinesConnected > 0 {
				row("server goroutines", "%.0f before, %.0f connected; %.3f per connection", s.GoroutinesBefore, s.GoroutinesConnected, s.GoroutinesPerConn)
			}
			if s.Conflated > 0 || s.SlowDisconnects > 0 {
				row("server slow clients", "%.0f updates conflated, %.0f clients closed with 4008 (the gaps above)", s.Conflated, s.SlowDisconnects)
			}
		}
		if r.Server.SubsWindowStart > 0 || r.Server.SubsMax > 0 {
			row("nats subscriptions", "before %g, connected %g, window %g → %g, sampled min %g max %g",
				r.Server.SubsBefore, r.Server.SubsConnected, r.Server.SubsWindowStart, r.Server.SubsWindowEnd, r.Server.SubsMin, r.Server.SubsMax)
		}
		if t := r.Trend; t != nil {
			row("trend", "RSS %+.1f KiB/min (%.1f → %.1f MiB), threads %+.2f/min, goroutines %+.1f/min",
				t.RSSPerMin/1024, mib(t.RSSFirst), mib(t.RSSLast), t.ThreadsPerMin, t.GoroutinesPerMin)
			row("trend, second half", "RSS %+.1f KiB/min, Go heap in use %s", t.RSSPerMinLate/1024,
				orNA(t.HeapInusePerMinLate/1024, "%+.1f KiB/min"))
		}
		_ = tw.Flush()
	}
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "%s%s\n", resultPrefix, b)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func xraw(x float64) string { return ratio(x, "raw") }

func ratio(x float64, of string) string {
	if x == 0 {
		return ""
	}
	return fmt.Sprintf(" = %.2f× %s", x, of)
}

func orNA(v float64, format string) string {
	if v == 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

func fmtMap(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// goroutines reads the server's goroutine count from its metrics: the
// gateway's roomcast_goroutines, or the Go collector's go_goroutines.
func goroutines(m map[string]float64) float64 {
	if g, ok := m["roomcast_goroutines"]; ok {
		return g
	}
	return m["go_goroutines"]
}
