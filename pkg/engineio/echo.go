package engineio

// Echo returns a handler that sends every message back as it came, text or
// binary. It is the endpoint the official Engine.IO protocol test suite
// expects (see docs/socketio.md, conformance mode).
func Echo(c *Conn) Handler { return echo{c} }

type echo struct{ c *Conn }

func (e echo) Message(data []byte, binary bool) error {
	e.c.Send(Packet{Type: Message, Data: append([]byte(nil), data...), Binary: binary})
	return nil
}
func (echo) Closed(string)              {}
func (echo) Ready() <-chan struct{}     { return nil }
func (echo) Take(dst []Packet) []Packet { return dst }
