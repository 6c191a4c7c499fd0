// Package metrics holds the gateway's Prometheus metrics. Every series is
// named roomcast_…; counters end in _total. A Metrics is registered on a
// registry its owner passes in, never on the global default one, so that
// several gateways can live in one process (as they do in tests).
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the gateway's counters and gauges. Fields are safe for
// concurrent use.
type Metrics struct {
	ConnectionsAccepted prometheus.Counter
	Connections         prometheus.Gauge
	Disconnects         *prometheus.CounterVec // by close code
	UpdatesReceived     prometheus.Counter
	UpdatesDropped      *prometheus.CounterVec // by reason
	Deliveries          prometheus.Counter
	Conflated           prometheus.Counter
	Repaired            prometheus.Counter
	SlowDisconnects     prometheus.Counter
	FramesSent          prometheus.Counter
	MessagesSent        prometheus.Counter
	BytesSent           prometheus.Counter
	ClientErrors        *prometheus.CounterVec // by error code
	BatchMessages       prometheus.Histogram   // messages per frame written
	PublishToSend       prometheus.Histogram   // producer's ts to the frame's write, seconds
	AuthFailures        *prometheus.CounterVec // by reason (pkg/auth)
	ConnectionsRefused  *prometheus.CounterVec // handshakes refused, by reason
	TokensExpired       prometheus.Counter     // connections closed with 4001
	CompressedMessages  prometheus.Counter     // updates sent permessage-deflate compressed

	// Hostile-input limits (docs/security.md).
	TCPConnections prometheus.Gauge       // open TCP connections on listen, of any kind
	TCPRefused     *prometheus.CounterVec // connections closed at accept, by reason
	AcceptErrors   prometheus.Counter     // accept failures (too many open files)
	HostsRefused   prometheus.Counter     // requests refused for their Host header
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ConnectionsAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_connections_accepted_total", Help: "WebSocket connections accepted."}),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_connections", Help: "Open WebSocket connections."}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_disconnects_total", Help: "Connections closed by the gateway, by WebSocket close code."}, []string{"code"}),
		UpdatesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_updates_received_total", Help: "Room updates received from NATS."}),
		UpdatesDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_updates_dropped_total", Help: "Producer payloads refused and never forwarded, by reason."}, []string{"reason"}),
		Deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_deliveries_total", Help: "Updates queued to clients (one per update per local client)."}),
		Conflated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_conflated_total", Help: "Queued updates replaced by a newer update of the same room for a client that fell behind."}),
		Repaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_repaired_total", Help: "Updates the live subscription missed (NATS reconnect, dropped message) and the gateway fetched from history."}),
		SlowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_slow_disconnects_total", Help: "Clients disconnected with 4008 because their queue overflowed."}),
		FramesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_frames_sent_total", Help: "WebSocket data frames written (each holds one or more messages)."}),
		MessagesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_messages_sent_total", Help: "Protocol messages written to clients."}),
		BytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_bytes_sent_total", Help: "Payload bytes written to clients."}),
		ClientErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_client_errors_total", Help: "Error replies sent to clients, by error code."}, []string{"code"}),
		BatchMessages: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "roomcast_batch_messages", Help: "Messages per WebSocket frame written.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}}),
		PublishToSend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "roomcast_publish_to_send_seconds",
			Help:    "Per frame written: time from the ts (set by the producer) of its oldest update to the write; includes clock skew between producer and gateway.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_auth_failures_total", Help: "Requests refused with 401 (WebSocket handshakes and /api/rooms), by reason."}, []string{"reason"}),
		ConnectionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_connections_refused_total", Help: "WebSocket handshakes refused before the upgrade, by reason (origin, max_connections, max_connections_per_ip, draining, bad_handshake); auth failures are in roomcast_auth_failures_total."}, []string{"reason"}),
		TokensExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_tokens_expired_total", Help: "Open connections closed with 4001 because their token expired."}),
		CompressedMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_compressed_messages_total", Help: "Updates sent compressed (permessage-deflate), each compressed once per gateway and shared."}),
		TCPConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_tcp_connections", Help: "Open TCP connections on listen: WebSocket, Socket.IO, HTTP keep-alive and handshakes in progress."}),
		TCPRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_tcp_refused_total", Help: "TCP connections closed at accept, before any request was read, by reason (max_tcp_connections, max_tcp_connections_per_ip)."}, []string{"reason"}),
		AcceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_accept_errors_total", Help: "Failed accepts on listen (e.g. too many open files)."}),
		HostsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_hosts_refused_total", Help: "Requests refused with 403 because their Host is not one the gateway serves (allowed_hosts)."}),
	}
	reg.MustRegister(m.TCPConnections, m.TCPRefused, m.AcceptErrors, m.HostsRefused)
	reg.MustRegister(m.ConnectionsAccepted, m.Connections, m.Disconnects, m.UpdatesReceived,
		m.UpdatesDropped, m.Deliveries, m.Conflated, m.Repaired, m.SlowDisconnects, m.FramesSent,
		m.MessagesSent, m.BytesSent, m.ClientErrors, m.BatchMessages, m.PublishToSend,
		m.AuthFailures, m.ConnectionsRefused, m.TokensExpired, m.CompressedMessages)
	return m
}
