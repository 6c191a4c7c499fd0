package roomtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Resumer is a client that behaves as roomcast.js does: when its
// connection is lost it reconnects, to the next gateway in its list, and
// re-joins its rooms with since = the last seq it holds. It checks every
// update against the one before: a seq not above the last is a duplicate,
// a prev that is not the last seq (or a "missed" flag) is a gap.
type Resumer struct {
	addrs []string
	rooms []string

	mu        sync.Mutex
	last      map[string]uint64
	updates   int
	gaps      []string
	dups      int
	lostAt    time.Time       // when the current outage began; zero while live
	back      []time.Duration // outage to first update after it, per outage
	lost      []time.Time     // when each connection was lost
	conn      *websocket.Conn
	connected int       // index of the gateway of conn
	latency   []Latency // per update with a "ts": publish to receive
	replies   []string  // ops other than update (joined, error:code), in order

	stop chan struct{}
	done chan struct{}
}

// StartResumer connects to addrs[first] (host:port of gateways) and joins
// rooms. Stop it with Stop.
func StartResumer(addrs []string, first int, rooms []string) *Resumer {
	r := &Resumer{addrs: addrs, rooms: rooms, last: map[string]uint64{}, connected: first,
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.run(first)
	return r
}

func (r *Resumer) run(i int) {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		conn, _, err := websocket.DefaultDialer.Dial("ws://"+r.addrs[i]+"/ws", nil)
		if err != nil {
			i = (i + 1) % len(r.addrs)
			select {
			case <-r.stop:
				return
			case <-time.After(time.Duration(20+rand.IntN(80)) * time.Millisecond):
			}
			continue
		}
		r.mu.Lock()
		r.conn, r.connected = conn, i
		for _, room := range r.rooms {
			cmd := fmt.Sprintf(`{"op":"join","room":%q`, room)
			if s := r.last[room]; s > 0 {
				cmd += fmt.Sprintf(`,"since":%d`, s)
			}
			_ = conn.WriteMessage(websocket.TextMessage, []byte(cmd+"}"))
		}
		r.mu.Unlock()
		r.read(conn)
		conn.Close()
		r.mu.Lock()
		r.conn = nil
		now := time.Now()
		r.lost = append(r.lost, now)
		if r.lostAt.IsZero() {
			r.lostAt = now
		}
		r.mu.Unlock()
		i = (i + 1) % len(r.addrs)
	}
}

func (r *Resumer) read(conn *websocket.Conn) {
	var buf []byte
	for {
		_, rd, err := conn.NextReader()
		if err != nil {
			return
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := rd.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
		}
		now := time.Now()
		for line := range bytes.SplitSeq(buf, []byte("\n")) {
			u, ok := parseUpdate(line)
			if !ok {
				var m Msg
				if json.Unmarshal(line, &m) != nil || m.Op != "update" {
					if m.Op != "" {
						r.mu.Lock()
						r.replies = append(r.replies, m.Op+":"+m.Code)
						r.mu.Unlock()
					}
					if m.Op == "error" && m.Code == "history_unavailable" && m.Room != "" {
						// As roomcast.js does: join without since (the
						// update after it will show as a gap).
						_ = conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"op":"join","room":%q}`, m.Room))
					}
					continue
				}
				u = update{room: m.Room, seq: m.Seq, missed: m.Missed, hasPrev: m.Prev != nil}
				if m.Prev != nil {
					u.prev = *m.Prev
				}
				var ts struct{ TS int64 }
				_ = json.Unmarshal(m.Data, &ts)
				u.ts = ts.TS
			}
			r.record(u, now)
		}
	}
}

// update is what a Resumer needs of an update line.
type update struct {
	room      string
	seq, prev uint64
	hasPrev   bool
	missed    bool
	ts        int64 // the payload's "ts", 0 if none
}

// parseUpdate reads an update line in the exact form the gateway writes
// it, without a JSON decoder: 2,500 test clients at 20 Hz would otherwise
// spend more CPU decoding than the gateway spends sending. Anything else
// returns false and is decoded as JSON.
func parseUpdate(line []byte) (u update, ok bool) {
	const head = `{"op":"update","room":"`
	if !bytes.HasPrefix(line, []byte(head)) {
		return u, false
	}
	rest := line[len(head):]
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return u, false
	}
	u.room, rest = string(rest[:i]), rest[i+1:]
	num := func(key string) (uint64, bool) {
		if !bytes.HasPrefix(rest, []byte(key)) {
			return 0, false
		}
		rest = rest[len(key):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		v, err := strconv.ParseUint(string(rest[:j]), 10, 64)
		rest = rest[j:]
		return v, err == nil
	}
	if u.seq, ok = num(`,"seq":`); !ok {
		return u, false
	}
	u.prev, u.hasPrev = num(`,"prev":`)
	if bytes.HasPrefix(rest, []byte(`,"missed":true`)) {
		u.missed, rest = true, rest[len(`,"missed":true`):]
	}
	if !bytes.HasPrefix(rest, []byte(`,"data":{`)) {
		return u, false
	}
	if k := bytes.Index(rest, []byte(`"ts":`)); k >= 0 {
		d := rest[k+5:]
		j := 0
		for j < len(d) && d[j] >= '0' && d[j] <= '9' {
			j++
		}
		u.ts, _ = strconv.ParseInt(string(d[:j]), 10, 64)
	}
	return u, true
}

// Latency is one update's publish-to-receive time, and when it arrived.
type Latency struct {
	At time.Time
	D  time.Duration
}

func (r *Resumer) record(m update, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.ts > 0 && !m.missed {
		r.latency = append(r.latency, Latency{At: now, D: now.Sub(time.UnixMilli(m.ts))})
	}
	if !r.lostAt.IsZero() {
		r.back = append(r.back, now.Sub(r.lostAt))
		r.lostAt = time.Time{}
	}
	r.updates++
	last := r.last[m.room]
	switch {
	case m.seq == 0:
		r.gaps = append(r.gaps, fmt.Sprintf("%s: update without seq", m.room))
	case last != 0 && m.seq <= last:
		r.dups++
		return
	case m.missed:
		r.gaps = append(r.gaps, fmt.Sprintf("%s: seq %d flagged missed after %d", m.room, m.seq, last))
	case last != 0 && (!m.hasPrev || m.prev != last):
		r.gaps = append(r.gaps, fmt.Sprintf("%s: seq %d prev %d after %d", m.room, m.seq, m.prev, last))
	}
	r.last[m.room] = m.seq
}

// Stop ends the client and waits for it.
func (r *Resumer) Stop() {
	close(r.stop)
	r.mu.Lock()
	if r.conn != nil {
		r.conn.Close()
	}
	r.mu.Unlock()
	<-r.done
}

// Result is what a Resumer saw.
type Result struct {
	Updates int
	Gaps    []string
	Dups    int
	Last    map[string]uint64
	Back    []time.Duration // per outage: time to the first update after it
	Lost    []time.Time
	Gateway int // index of the gateway connected to last
	// Latency of each update that carried a "ts".
	Latency []Latency
	// Replies are the messages other than updates (joined, error:code).
	Replies []string
}

// Result returns what the client has seen so far.
func (r *Resumer) Result() Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := make(map[string]uint64, len(r.last))
	for k, v := range r.last {
		last[k] = v
	}
	return Result{Updates: r.updates, Gaps: append([]string(nil), r.gaps...), Dups: r.dups, Last: last,
		Back: append([]time.Duration(nil), r.back...), Lost: append([]time.Time(nil), r.lost...), Gateway: r.connected,
		Latency: append([]Latency(nil), r.latency...), Replies: append([]string(nil), r.replies...)}
}
