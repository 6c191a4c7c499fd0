// Package protocol defines roomcast's native WebSocket wire protocol: room
// name validation, the parsing of client commands, the encoding of server
// messages, and the error and close codes that clients depend on.
//
// Everything here is pure and allocation-conscious: the gateway encodes each
// update once (AppendUpdate) and shares the bytes with every local client of
// the room. docs/protocol.md is the human-readable form of this package.
package protocol
