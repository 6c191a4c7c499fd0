// Package broker is roomcast's only contact with NATS: it starts the
// embedded nats-server when no external one is configured, opens the
// connection (in-process or to a cluster, reconnecting forever), and maps
// rooms to subjects for the hub's one-subscription-per-room interest.
//
// A room name must have passed protocol.ValidRoom before it gets here; the
// broker checks again, so that no caller can turn a room into a wildcard.
package broker
