// Package metrics holds the gateway's Prometheus metrics. Every series is
// named roomcast_…; counters end in _total. A Metrics is registered on a
// registry its owner passes in, never on the global default one, so that
// several gateways can live in one process (as they do in tests).
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomcast/roomcast/pkg/auth"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// Metrics are the gateway's counters and gauges. Fields are safe for
// concurrent use.
type Metrics struct {
	ConnectionsAccepted prometheus.Counter
	Connections         prometheus.Gauge
	Disconnects         *prometheus.CounterVec // by close code and who closed; use Disconnected
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
	PublishToSend       prometheus.Histogram   // live updates: producer's ts to the frame's write, seconds
	ReplayAge           prometheus.Histogram   // snapshots and replays: producer's ts to the frame's write, seconds
	AuthFailures        *prometheus.CounterVec // by reason (pkg/auth)
	ConnectionsRefused  *prometheus.CounterVec // handshakes refused, by reason
	TokensExpired       prometheus.Counter     // connections closed with 4001
	CompressedMessages  prometheus.Counter     // updates sent permessage-deflate compressed
	Replayed            *prometheus.CounterVec // updates replayed to resuming clients, by source
	HistoryRequests     *prometheus.CounterVec // reads of the history stream, by kind and result
	PollerErrors        prometheus.Counter     // epoll failures the poller survived (pkg/ws)

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
			Name: "roomcast_connections_accepted_total", Help: "Client connections accepted: /ws, SSE streams, Socket.IO sessions."}),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_connections", Help: "Open client connections: /ws, SSE streams, Socket.IO sessions."}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_disconnects_total", Help: "Connections and Socket.IO sessions closed, by WebSocket close code (1006: ended without a close frame; other: a client's code outside the known ones) and by who closed (client, server)."}, []string{"code", "by"}),
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
		// The count is a whole number: bounds half-way between them make
		// each low bucket hold exactly one count, so that
		// histogram_quantile (which interpolates linearly inside a bucket)
		// reads 1 when every frame holds one message, not 0.5.
		BatchMessages: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "roomcast_batch_messages", Help: "Messages per WebSocket frame written (bucket bounds fall half-way between whole numbers).",
			Buckets: []float64{0.5, 1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 64.5, 128.5, 256.5}}),
		PublishToSend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "roomcast_publish_to_send_seconds",
			Help:    "Per frame (Socket.IO: per batch taken) with live updates: time from the ts (set by the producer) of its oldest live update to the write; includes clock skew between producer and gateway. Snapshots and replays are in roomcast_replay_age_seconds.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		ReplayAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "roomcast_replay_age_seconds",
			Help:    "Per frame (Socket.IO: per batch taken) with a snapshot (the room's latest update, sent on join) or updates replayed from history: age of its oldest such update at the write, from its ts.",
			Buckets: []float64{.01, .05, .1, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_auth_failures_total", Help: "Requests refused with 401 (WebSocket handshakes and /api/rooms), by reason."}, []string{"reason"}),
		ConnectionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_connections_refused_total", Help: "WebSocket handshakes refused before the upgrade, by reason (origin, max_connections, max_connections_per_ip, draining, bad_handshake, socketio_pending, socketio_pending_per_ip); auth failures are in roomcast_auth_failures_total."}, []string{"reason"}),
		TokensExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_tokens_expired_total", Help: "Open connections closed with 4001 because their token expired."}),
		CompressedMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_compressed_messages_total", Help: "Updates sent compressed (permessage-deflate), each compressed once per gateway and shared."}),
		Replayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_replayed_total", Help: "Stored updates sent to clients that resumed with since, by where they came from (memory: the room's recent updates on this gateway; stream: JetStream)."}, []string{"source"}),
		HistoryRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_history_requests_total", Help: "Requests to the JetStream history stream, by kind (latest: a cold room's snapshot; range: a batched read for a resume or a repair) and result (ok, error)."}, []string{"kind", "result"}),
		PollerErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_poller_errors_total", Help: "Failures of the epoll reader (epoll_wait errors other than EINTR, a second read of one connection refused); each is logged and the poller goes on."}),
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
	for _, src := range []string{"memory", "stream"} {
		m.Replayed.WithLabelValues(src)
	}
	for _, k := range []string{"latest", "range"} {
		for _, r := range []string{"ok", "error"} {
			m.HistoryRequests.WithLabelValues(k, r)
		}
	}
	reg.MustRegister(m.Replayed, m.HistoryRequests)
	reg.MustRegister(m.ConnectionsAccepted, m.Connections, m.Disconnects, m.UpdatesReceived,
		m.UpdatesDropped, m.Deliveries, m.Conflated, m.Repaired, m.SlowDisconnects, m.FramesSent,
		m.MessagesSent, m.BytesSent, m.ClientErrors, m.BatchMessages, m.PublishToSend, m.ReplayAge,
		m.AuthFailures, m.ConnectionsRefused, m.TokensExpired, m.CompressedMessages, m.PollerErrors)
	m.initLabels()
	return m
}

// Label values of roomcast_disconnects_total's "by".
const (
	ByClient = "client"
	ByServer = "server"
)

// CloseAbnormal (1006) is never sent: it stands for a connection that
// ended without a close frame (the socket dropped, a write failed, the
// heartbeat gave up).
const CloseAbnormal = 1006

// clientCodes are the close codes a client's close is counted under;
// anything else a client sends (3000-4999 are free for applications)
// counts as "other", so that clients cannot grow the label set.
var clientCodes = []int{1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1010, 1011}

// serverCodes are the codes the gateway closes with (1000: a Socket.IO
// session that connected no namespace or missed its pings).
var serverCodes = []int{1000, protocol.CloseProtocolError, protocol.CloseUnsupportedData, CloseAbnormal,
	protocol.CloseInvalidPayload, protocol.ClosePolicyViolation, protocol.CloseMessageTooBig,
	protocol.CloseServiceRestart, protocol.CloseTryAgainLater, protocol.CloseTokenExpired, protocol.CloseTooSlow}

// Disconnected counts one closed connection.
func (m *Metrics) Disconnected(code int, byClient bool) {
	by, known := ByServer, serverCodes
	if byClient {
		by, known = ByClient, clientCodes
	}
	label := "other"
	for _, c := range known {
		if c == code {
			label = strconv.Itoa(code)
			break
		}
	}
	m.Disconnects.WithLabelValues(label, by).Inc()
}

// ObserveSent observes the updates of one frame written at now: the
// oldest live update's ts as publish-to-send latency, and the oldest
// snapshot's or replayed update's ts as replay age. Only live updates are
// latency: a snapshot or a replay is as old as the room's last update, or
// older. One observation each per frame, not per message, keeps the
// shared histograms off the per-delivery path.
func (m *Metrics) ObserveSent(now time.Time, msgs []outbox.Message) {
	var live, replayed int64
	for i := range msgs {
		p := msgs[i].Published()
		switch {
		case p <= 0:
		case msgs[i].Replay || msgs[i].Snapshot:
			if replayed == 0 || p < replayed {
				replayed = p
			}
		case live == 0 || p < live:
			live = p
		}
	}
	ms := now.UnixMilli()
	if live > 0 {
		m.PublishToSend.Observe(float64(ms-live) / 1000)
	}
	if replayed > 0 {
		m.ReplayAge.Observe(float64(ms-replayed) / 1000)
	}
}

// initLabels creates every known label value at 0: a series that appears
// with its first event has no earlier sample, so rate() and increase()
// cannot see that event.
func (m *Metrics) initLabels() {
	for _, c := range serverCodes {
		m.Disconnects.WithLabelValues(strconv.Itoa(c), ByServer)
	}
	for _, c := range clientCodes {
		m.Disconnects.WithLabelValues(strconv.Itoa(c), ByClient)
	}
	// Disconnected files a code outside the lists under "other", for
	// either side.
	m.Disconnects.WithLabelValues("other", ByClient)
	m.Disconnects.WithLabelValues("other", ByServer)
	for _, r := range []string{"too_large", "not_utf8", "not_object", "invalid_json"} {
		m.UpdatesDropped.WithLabelValues(r)
	}
	for _, c := range []string{protocol.CodeBadJSON, protocol.CodeBadOp, protocol.CodeBadRoom, protocol.CodeForbidden,
		protocol.CodeTooManyRooms, protocol.CodeRateLimited, protocol.CodeHistoryUnavailable, protocol.CodeUnauthorized} {
		m.ClientErrors.WithLabelValues(c)
	}
	for _, r := range []string{auth.ReasonMissing, auth.ReasonMalformed, auth.ReasonAlgorithm, auth.ReasonSignature,
		auth.ReasonExpired, auth.ReasonNoExpiry, auth.ReasonNotYet, auth.ReasonIssuer, auth.ReasonAudience} {
		m.AuthFailures.WithLabelValues(r)
	}
	for _, r := range refusedReasons {
		m.ConnectionsRefused.WithLabelValues(r)
	}
	for _, r := range []string{"max_tcp_connections", "max_tcp_connections_per_ip"} {
		m.TCPRefused.WithLabelValues(r)
	}
}

// refusedReasons are the label values of roomcast_connections_refused_total.
// socketio_pending and socketio_pending_per_ip: Socket.IO sessions
// without a token yet, past the pending pool (pkg/gateway/sioslot.go).
var refusedReasons = []string{"origin", "max_connections", "max_connections_per_ip", "draining", "bad_handshake",
	"socketio_pending", "socketio_pending_per_ip"}
