// Package engineio is the transport layer of Socket.IO: the Engine.IO
// protocol, version 4, on the server side. It opens sessions over HTTP
// long-polling or WebSocket, upgrades a polling session to WebSocket
// (probe, noop to the waiting poll, upgrade), keeps each session alive with
// server pings and closes it when a pong is overdue, and answers bad
// requests with the protocol's 400 errors.
//
// What a session carries is up to a Handler (package socketio is the real
// one): the server calls Open for each new session, hands it every message
// packet the client sends, and takes the handler's outgoing packets
// whenever the session can write. Taking only when the client can take
// them leaves a slow client's backlog in the handler's own bounded queue,
// where it can be conflated, instead of in this package.
//
// An idle session holds no goroutine. The heartbeat is a timer (beat):
// it queues the pings and closes the session when a pong is overdue. A
// WebSocket is read by package wsread's frame parser; with
// Config.Poller its socket is watched by the gateway's epoll poller, the
// same one /ws uses, and read on a short-lived goroutine when it has
// something. The package answers the WebSocket handshake and writes whole
// frames itself, so a session keeps no gorilla Conn. Writing runs on a
// writer goroutine started when there is something to send (Conn.Wake
// from the handler, Send, a ping) and ended when there is nothing left.
// HTTP handlers return after the upgrade.
//
// Goroutines, each with a way to end; the Server's WaitGroup tracks all
// but the poller's reads, and Shutdown/Abort wait for it:
//   - the WebSocket writer (Conn.writeLoop), at most one per session: ends
//     when a take comes back empty; after the session ended, the last one
//     sends the close frame and closes the socket;
//   - per WebSocket without a poller (TLS, other systems, no Config.Poller):
//     a reader goroutine (wsConn.readLoop), ended by closing the socket;
//   - with a poller: a read per readable event (wsConn.Readable, started
//     by the poller), which returns when the socket has nothing more; it
//     touches the session only through methods that refuse an ended one;
//   - when a session ends: one goroutine calls Handler.Closed
//     (Conn.closeHandler) and returns;
//   - for a handler with a Ready channel (not Conn.Wake), one goroutine
//     per WebSocket session turns its signals into wakes; it ends with the
//     session;
//   - a long-poll GET waits on its HTTP handler's goroutine for packets,
//     a POST is handled on its own; neither outlives its request. Between
//     polls a polling session holds no goroutine, and its own queue is
//     bounded (maxQueued packets; the handler's has its own bound).
//
// Handler.Message and Handler.Closed are never called concurrently for one
// session, and Closed is the last call. Handler.Take runs on whichever
// goroutine writes (a poll or the WebSocket writer), concurrently with
// Message.
//
// Lock order: Server.mu and Conn.mu are never held together; Conn.recvMu
// (serialising the handler's Message and Closed) may be held while
// Conn.hbMu, Conn.mu or Server.mu is taken, not the other way round;
// Conn.hbMu (the heartbeat) may be held while Conn.mu, Server.mu or
// wsConn.mu is taken, not the other way round; wsConn.mu (a socket's
// poller registration) is never held while Conn.mu is taken, nor taken
// under Conn.mu.
package engineio
