package roomtest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
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
	for {
		_, frame, err := conn.ReadMessage()
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(frame), "\n") {
			var m Msg
			if json.Unmarshal([]byte(line), &m) != nil || m.Op != "update" {
				continue
			}
			r.record(m)
		}
	}
}

// Latency is one update's publish-to-receive time, and when it arrived.
type Latency struct {
	At time.Time
	D  time.Duration
}

func (r *Resumer) record(m Msg) {
	now := time.Now()
	var ts struct{ TS int64 }
	_ = json.Unmarshal(m.Data, &ts)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ts.TS > 0 && !m.Missed {
		r.latency = append(r.latency, Latency{At: now, D: now.Sub(time.UnixMilli(ts.TS))})
	}
	if !r.lostAt.IsZero() {
		r.back = append(r.back, time.Since(r.lostAt))
		r.lostAt = time.Time{}
	}
	r.updates++
	last := r.last[m.Room]
	switch {
	case m.Seq == 0:
		r.gaps = append(r.gaps, fmt.Sprintf("%s: update without seq", m.Room))
	case last != 0 && m.Seq <= last:
		r.dups++
		return
	case m.Missed:
		r.gaps = append(r.gaps, fmt.Sprintf("%s: seq %d flagged missed after %d", m.Room, m.Seq, last))
	case last != 0 && (m.Prev == nil || *m.Prev != last):
		r.gaps = append(r.gaps, fmt.Sprintf("%s: seq %d prev %v after %d", m.Room, m.Seq, m.Prev, last))
	}
	r.last[m.Room] = m.Seq
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
		Latency: append([]Latency(nil), r.latency...)}
}
