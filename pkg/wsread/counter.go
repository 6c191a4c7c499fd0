package wsread

// Counter counts the poller's failures (the gateway's
// roomcast_poller_errors_total).
type Counter interface{ Inc() }
