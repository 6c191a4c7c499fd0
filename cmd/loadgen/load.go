package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"
)

// sample is one reading of the server process during the window.
type sample struct {
	T             float64 `json:"t_s"` // seconds since the window began
	RSS           int64   `json:"rss_bytes"`
	Threads       int     `json:"threads"`
	Goroutines    float64 `json:"goroutines,omitempty"` // roomcast_goroutines (or go_goroutines), when the server exports it
	Subscriptions float64 `json:"nats_subscriptions,omitempty"`
	Rooms         float64 `json:"rooms,omitempty"`
	Connections   float64 `json:"connections,omitempty"`
	HeapInuse     float64 `json:"heap_inuse_bytes,omitempty"` // go_memstats_heap_inuse_bytes, a Go server's
	Scraped       bool    `json:"metrics_ok"`                 // the metrics above were read
}

// runLoad is the coordinator: publisher, connection groups, the server's
// accounting, and the report.
func runLoad(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	logf := func(format string, a ...any) {
		if !cfg.Quiet {
			fmt.Fprintf(stderr, "loadgen: "+format+"\n", a...)
		}
	}
	if _, err := raiseNoFile(); err != nil {
		logf("cannot raise the open files limit: %v", err)
	}
	res := newResult(cfg)
	pid := strconv.Itoa(cfg.PID)
	metricsURL := cfg.Metrics
	if metricsURL == "" && !cfg.Raw {
		metricsURL = "http://" + cfg.Addr + "/metrics"
	}
	if cfg.PID > 0 {
		res.Server.RSSBefore, _, _ = procStatus(pid)
	}
	m0 := scrape(ctx, metricsURL)

	var pubWG sync.WaitGroup
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer func() { stopPub(); pubWG.Wait() }()
	var pub *publisher
	if cfg.Hz > 0 {
		var err error
		if pub, err = newPublisher(&cfg); err != nil {
			return fmt.Errorf("NATS %s: %w", cfg.NATS, err)
		}
		pubWG.Add(1)
		go func() { defer pubWG.Done(); pub.run(pubCtx) }()
	}

	// Connections, in this process or spread over worker processes.
	nw := min(cfg.workers(), cfg.Conns)
	per := (cfg.Conns + nw - 1) / nw
	var groups []group
	defer func() {
		for _, g := range groups {
			g.stop()
		}
	}()
	logf("%s: %d connections to %s (%s) in %d process(es), %d rooms, %d per connection, %g Hz%s",
		cfg.Workload, cfg.Conns, cfg.Addr, res.Mode, nw, cfg.Rooms, cfg.RoomsPerConn, cfg.Hz, map[bool]string{true: " staggered"}[cfg.Stagger])
	dialStart := time.Now()
	for i := range nw {
		first := i * per
		n := min(per, cfg.Conns-first)
		if nw == 1 {
			w := newWorker(cfg, first, n)
			w.start(1)
			groups = append(groups, localGroup{w})
			continue
		}
		g, err := startRemote(workerStart{Config: cfg, First: first, N: n, Workers: nw})
		if err != nil {
			return fmt.Errorf("starting worker: %w", err)
		}
		groups = append(groups, g)
	}
	for _, g := range groups {
		if err := g.waitReady(ctx); err != nil {
			return fmt.Errorf("waiting for connections: %w", err)
		}
	}
	res.DialSeconds = time.Since(dialStart).Seconds()
	st, err := snapshotAll(groups)
	if err != nil {
		return err
	}
	res.Established, res.Failed = st.Established, st.Failed
	logf("connected %d (failed %d) in %.1fs", st.Established, st.Failed, res.DialSeconds)

	if !sleep(ctx, cfg.Settle) {
		return ctx.Err()
	}
	if cfg.PID > 0 {
		res.Server.RSSConnected, res.Server.Threads, _ = procStatus(pid)
		if st.Established > 0 {
			res.Server.RSSPerConn = float64(res.Server.RSSConnected-res.Server.RSSBefore) / float64(st.Established)
		}
	}
	mConnected := scrape(ctx, metricsURL)
	res.Server.Goroutines = goroutines(mConnected)
	res.Server.GoroutinesBefore, res.Server.GoroutinesConnected = goroutines(m0), res.Server.Goroutines
	if st.Established > 0 && res.Server.GoroutinesConnected > 0 {
		res.Server.GoroutinesPerConn = (res.Server.GoroutinesConnected - res.Server.GoroutinesBefore) / float64(st.Established)
	}
	if !sleep(ctx, cfg.Warmup) {
		return ctx.Err()
	}

	// The window.
	for _, g := range groups {
		if err := g.reset(); err != nil {
			return err
		}
	}
	if pub != nil {
		pub.reset()
	}
	cpu0, _ := procCPU(pid)
	self0, _ := procCPU("self")
	m1 := scrape(ctx, metricsURL)
	start := time.Now()
	var samples []sample
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() { // the sampler; ends with the window
		defer close(sampleDone)
		if cfg.Sample <= 0 {
			return
		}
		t := time.NewTicker(cfg.Sample)
		defer t.Stop()
		for {
			s := takeSample(pid, cfg.PID > 0, metricsURL, start)
			samples = append(samples, s)
			if s.T > 0 && int(s.T)%60 == 0 && cfg.Duration >= 5*time.Minute {
				logf("%.0fs: server RSS %.1f MiB, %d threads", s.T, float64(s.RSS)/(1<<20), s.Threads)
			}
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
		}
	}()
	logf("measuring for %v", cfg.Duration)
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err == nil {
			defer f.Close()
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			logf("cpu profile: %v", err)
			cfg.CPUProfile = ""
		}
	}
	sleep(ctx, cfg.Duration) // a signal ends the window early; the report still comes
	if cfg.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	window := time.Since(start)
	cpu1, _ := procCPU(pid)
	self1, _ := procCPU("self")
	close(stopSampling)
	<-sampleDone
	m2 := scrape(context.Background(), metricsURL)
	if cfg.PID > 0 {
		res.Server.RSSEnd, _, _ = procStatus(pid)
	}
	st, err = snapshotAll(groups)
	if err != nil {
		return err
	}
	var published []uint64
	if pub != nil {
		published = pub.published()
	}
	res.fill(&cfg, st, window, published, self1-self0)
	if cfg.PID > 0 {
		res.Server.CPUSeconds = cpu1 - cpu0
		res.serverCosts(&cfg)
	}
	res.metrics(m0, mConnected, m1, m2)
	res.Samples = samples
	res.trend()
	res.print(stdout, cfg.Quiet)
	return nil
}

func snapshotAll(groups []group) (Stats, error) {
	var total Stats
	h := make([]uint64, histBuckets)
	for _, g := range groups {
		s, err := g.snapshot()
		if err != nil {
			return total, err
		}
		total.add(s, h)
	}
	total.Hist = sparse(h)
	return total, nil
}

func takeSample(pid string, hasPID bool, metricsURL string, start time.Time) sample {
	s := sample{T: time.Since(start).Seconds()}
	if hasPID {
		s.RSS, s.Threads, _ = procStatus(pid)
	}
	m := scrape(context.Background(), metricsURL)
	s.Scraped = m != nil
	s.Goroutines = goroutines(m)
	s.Subscriptions = m["roomcast_nats_subscriptions"]
	s.Rooms = m["roomcast_rooms"]
	s.Connections = m["roomcast_connections"]
	s.HeapInuse = m["go_memstats_heap_inuse_bytes"]
	return s
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
