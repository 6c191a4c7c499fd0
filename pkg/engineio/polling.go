package engineio

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// probeWait is how long a poll that arrives during an upgrade waits for
// the upgrade to complete.
const probeWait = 100 * time.Millisecond

// servePoll answers a long-poll GET with every waiting packet, waiting for
// one if there is none. A second GET while one waits is a protocol
// violation: the session is closed (the waiting GET gets a close packet)
// and the second GET a 400.
func (c *Conn) servePoll(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	switch {
	case c.closed && (c.finalSent || c.polling):
		c.mu.Unlock()
		writeError(w, http.StatusBadRequest, codeUnknownSID)
		return
	case c.ws.Load() != nil: // upgraded: polling is over
		c.mu.Unlock()
		writeError(w, http.StatusBadRequest, codeBadRequest)
		return
	case c.polling:
		c.mu.Unlock()
		c.close(Close, 1002, "duplicate poll")
		writeError(w, http.StatusBadRequest, codeBadRequest)
		return
	}
	if c.probed || c.upgrading {
		// A new poll during an upgrade: the client is about to send "5"
		// (a client's waiting poll was answered when the probe came).
		// Give it a moment, as the reference server does, so that a poll
		// racing the upgrade is refused like one that comes after it. A
		// probe already sent may not have been read yet: the socket is
		// read when the poller reports it, not by this request.
		c.mu.Unlock()
		t := time.NewTimer(probeWait)
		select {
		case <-c.upgraded:
		case <-t.C:
		case <-c.done:
		}
		t.Stop()
		c.mu.Lock()
		if c.ws.Load() != nil || c.polling {
			c.mu.Unlock()
			writeError(w, http.StatusBadRequest, codeBadRequest)
			return
		}
	}
	c.polling = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.polling = false
		c.mu.Unlock()
	}()

	var batch []Packet
	for {
		batch = c.take(batch)
		if len(batch) > 0 {
			break
		}
		c.mu.Lock()
		closed, final, probed := c.closed, c.final, c.probed || c.ws.Load() != nil
		c.mu.Unlock()
		if closed {
			c.mu.Lock()
			c.finalSent = true
			c.mu.Unlock()
			c.srv.remove(c)
			batch = append(batch, Packet{Type: final})
			break
		}
		if probed { // end this poll so that the client can upgrade
			batch = append(batch, Packet{Type: Noop})
			break
		}
		select {
		case <-c.wake:
		case <-c.h.Ready():
		case <-c.done:
		case <-r.Context().Done():
			return // the client went away; nothing was taken
		}
	}
	body := appendPayload(make([]byte, 0, 256), batch)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	if _, err := w.Write(body); err != nil {
		c.failed(err, "poll write failed")
	}
}

// servePost reads the packets a client POSTs. An invalid payload, an
// oversized one or an overlapping POST closes the session.
func (c *Conn) servePost(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		writeError(w, http.StatusBadRequest, codeUnknownSID)
		return
	case c.ws.Load() != nil:
		c.mu.Unlock()
		writeError(w, http.StatusBadRequest, codeBadRequest)
		return
	case c.posting:
		c.mu.Unlock()
		c.close(Close, 1002, "overlapping POST")
		writeError(w, http.StatusBadRequest, codeBadRequest)
		return
	}
	c.posting = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.posting = false
		c.mu.Unlock()
	}()

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(c.srv.cfg.MaxPayload)))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			c.close(Close, 1009, "payload too large")
			writeError(w, http.StatusRequestEntityTooLarge, codeBadRequest)
			return
		}
		c.clientClosed(Close, 1006, "reading the POST failed")
		return
	}
	packets, err := decodePayload(body)
	if err != nil {
		c.close(Close, 1002, "invalid packet")
		writeError(w, http.StatusBadRequest, codeBadRequest)
		return
	}
	for _, p := range packets {
		if err := c.receive(p); err != nil {
			if errors.Is(err, errClosed) {
				break
			}
			c.srv.log.Debug("invalid packet", "sid", c.id, "err", err)
			c.close(Close, 1002, "invalid packet")
			writeError(w, http.StatusBadRequest, codeBadRequest)
			return
		}
	}
	w.Header().Set("Content-Type", "text/html")
	_, _ = w.Write([]byte("ok"))
}
