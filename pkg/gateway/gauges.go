package gateway

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// registerGauges adds the gauges computed when scraped: queue depth summed
// over clients, readiness and NATS connection state.
func (g *Gateway) registerGauges() {
	// what: 0 messages, 1 bytes, 2 largest queue in bytes.
	queued := func(what int) func() float64 {
		return func() float64 {
			g.mu.Lock()
			defer g.mu.Unlock()
			total := 0
			for s := range g.sessions {
				q, ok := s.(queuer)
				if !ok {
					continue
				}
				m, b := q.Queued()
				switch what {
				case 0:
					total += m
				case 1:
					total += b
				default:
					total = max(total, b)
				}
			}
			return float64(total)
		}
	}
	g.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_queued_messages", Help: "Messages waiting in client queues."}, queued(0)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_queued_bytes", Help: "Bytes waiting in client queues."}, queued(1)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_queued_bytes_max", Help: "Bytes waiting in the longest client queue."}, queued(2)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_nats_connected", Help: "1 while the NATS connection is up."}, func() float64 {
			if g.nc.IsConnected() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_nats_subscriptions", Help: "Subscriptions on the gateway's NATS connection: one per room, plus the catalogue watcher and request inboxes."}, func() float64 {
			return float64(g.nc.NumSubscriptions())
		}),
		// For dashboards: replicas taking traffic, vs. draining or cut off
		// from NATS (what /readyz says).
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_ready", Help: "1 while /readyz answers 200: not shutting down and NATS connected."}, func() float64 {
			if ok, _ := g.Ready(); ok {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_nats_reconnects_total", Help: "NATS reconnections."}, func() float64 {
			return float64(g.nc.Stats().Reconnects)
		}),
		// Constant: lets a dashboard draw connections against the limit,
		// which differs between deployments. The limit enforced, not the
		// configured one: limits.max_connections 0 means automatic, and a
		// 0 here would make connections/limit +Inf.
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_max_connections", Help: "Connections (WebSocket and Socket.IO) this gateway admits; beyond it they are refused with 503. limits.max_connections, or with 0 (automatic) what the open-file limit allows, at most 20000."}, func() float64 {
			return float64(g.maxSessions)
		}),
		// For soak runs (the load tool's W5): goroutines must stay flat.
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_goroutines", Help: "Goroutines in the gateway process: a fixed number, plus one per connection while it is being read or written; an idle WebSocket (/ws or Socket.IO) holds none, or one reader with TLS or without epoll, and a waiting Socket.IO long-poll or an /sse stream holds its HTTP request's."}, func() float64 {
			return float64(runtime.NumGoroutine())
		}),
	)
}

// registerWriterMetrics says which write path this gateway took (the
// kernel or a container's seccomp profile decides it under io.uring auto)
// and how well the io_uring path batches. Called once the writer is
// chosen.
func (g *Gateway) registerWriterMetrics() {
	writer, path := "goroutine", "write"
	if g.writer != nil {
		writer, path = "loop", g.writer.Path()
	}
	g.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_writer_info", Help: "1, labelled with how /ws sessions are written: writer loop (event-loop writer) or goroutine (one per busy connection), path io_uring or write.",
			ConstLabels: prometheus.Labels{"writer": writer, "path": path}}, func() float64 { return 1 }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_uring_sends_total", Help: "Socket writes the event-loop writer handed to the kernel as io_uring SENDs."}, func() float64 {
			sends, _ := g.writer.RingStats()
			return float64(sends)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_uring_failed_loops", Help: "Write loops whose io_uring failed after start (io_uring_enter error, logged at error): they write with write(2) since, whatever roomcast_writer_info says. Should stay 0."}, func() float64 {
			return float64(g.writer.RingFailures())
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_uring_submissions_total", Help: "io_uring_enter calls that submitted those SENDs; sends / submissions is the batch the kernel took at once."}, func() float64 {
			_, subs := g.writer.RingStats()
			return float64(subs)
		}),
	)
}
