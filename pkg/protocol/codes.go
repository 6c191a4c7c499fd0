package protocol

// Error codes carried by {"op":"error","code":...} replies.
const (
	CodeBadJSON            = "bad_json"            // frame is not one JSON object, or a field has the wrong type
	CodeBadOp              = "bad_op"              // "op" missing or not a known command
	CodeBadRoom            = "bad_room"            // room missing or outside ^[A-Za-z0-9_-]{1,64}$
	CodeForbidden          = "forbidden"           // the connection may not join this room
	CodeTooManyRooms       = "too_many_rooms"      // per-connection room limit reached
	CodeRateLimited        = "rate_limited"        // command rate limit exceeded; the command was not executed
	CodeHistoryUnavailable = "history_unavailable" // "since" given but the gateway has no history
	CodeUnauthorized       = "unauthorized"        // authentication required or failed
)

// WebSocket close codes the gateway uses. 1002, 1003, 1007, 1008, 1009 and 1012
// are RFC 6455 / IANA codes; 4001 and 4008 are roomcast's own.
const (
	CloseNormal          = 1000
	CloseProtocolError   = 1002 // a frame broke RFC 6455 (unmasked, bad opcode, ...)
	CloseUnsupportedData = 1003 // a binary frame was received
	CloseInvalidPayload  = 1007 // a text frame was not valid UTF-8
	ClosePolicyViolation = 1008 // limits exceeded: command flood
	CloseMessageTooBig   = 1009 // frame larger than the read limit
	CloseServiceRestart  = 1012 // shutdown or drain: reconnect, ideally elsewhere
	CloseTryAgainLater   = 1013 // overload, or NATS unusable: reconnect later
	CloseTokenExpired    = 4001 // the access token expired: fetch a new one and reconnect
	CloseTooSlow         = 4008 // the client could not keep up even with conflation
)
