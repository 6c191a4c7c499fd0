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
// Goroutines, each tracked by the Server's WaitGroup and ended by
// Shutdown/Abort or the session's end:
//   - one heartbeat goroutine per session (Conn.run): sends the pings,
//     enforces the pong timeout, and when the session ends removes it and
//     calls Handler.Closed;
//   - per WebSocket: the reader runs on the HTTP handler's goroutine and a
//     writer goroutine drains the session's packets; both end with the
//     socket;
//   - a long-poll GET waits on its HTTP handler's goroutine for packets,
//     a POST is handled on its own; neither outlives its request.
//
// Handler.Message and Handler.Closed are never called concurrently for one
// session, and Closed is the last call. Handler.Take runs on whichever
// goroutine writes (a poll or the WebSocket writer), concurrently with
// Message.
//
// Lock order: Server.mu and Conn.mu are never held together; Conn.recvMu
// (serialising the handler's Message and Closed) may be held while
// Conn.mu or Server.mu is taken, not the other way round.
package engineio
