package engineio

// WaitingPolls counts the sessions with a long-poll GET waiting.
func (s *Server) WaitingPolls() int {
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.sessions))
	for _, c := range s.sessions {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	n := 0
	for _, c := range conns {
		c.mu.Lock()
		if c.polling {
			n++
		}
		c.mu.Unlock()
	}
	return n
}
