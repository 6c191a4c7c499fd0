package main

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// worker runs a share of the connections, in this process or in a worker
// process. Each connection is one goroutine that dials, joins, and then
// reads (or, in churn, joins and leaves in a loop) until the worker stops.
type worker struct {
	cfg   Config
	first int // global index of the first connection
	conns []*clientConn
	rec   *recorder

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection goroutines and the reconnector

	readyOnce   sync.Once
	readyCh     chan struct{}
	established atomic.Int64
	failed      atomic.Int64
	open        atomic.Int64
	cpuAtReset  float64
}

func newWorker(cfg Config, first, n int) *worker {
	w := &worker{cfg: cfg, first: first, rec: newRecorder(), readyCh: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.conns = make([]*clientConn, n)
	for i := range w.conns {
		gi := first + i
		c := &clientConn{w: w, gi: gi, sh: w.rec.shard(gi), churnRoom: -1}
		for j := range cfg.RoomsPerConn {
			c.rooms = append(c.rooms, cfg.roomOf(gi, j))
		}
		c.last = make([]uint64, len(c.rooms))
		w.conns[i] = c
	}
	return w
}

// start dials every connection, dialParallel at a time and paced by ramp
// (this worker's share of both), and returns at once; ready is closed when
// every connection is up and joined or has failed.
func (w *worker) start(workers int) {
	parallel := max(1, w.cfg.DialParallel/workers)
	var interval time.Duration
	if w.cfg.Ramp > 0 {
		interval = time.Duration(float64(time.Second) * float64(workers) / w.cfg.Ramp)
	}
	sem := make(chan struct{}, parallel)
	var initial sync.WaitGroup
	initial.Add(len(w.conns))
	w.wg.Add(1)
	go func() { // the dialer: ends when every connection has been started
		defer w.wg.Done()
		start := time.Now()
		for i, c := range w.conns {
			if interval > 0 {
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					select {
					case <-time.After(d):
					case <-w.ctx.Done():
					}
				}
			}
			select {
			case sem <- struct{}{}:
			case <-w.ctx.Done():
			}
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				c.run(w.ctx, func(ok bool) {
					if ok {
						w.established.Add(1)
					} else {
						w.failed.Add(1)
					}
					select {
					case <-sem:
					default:
					}
					initial.Done()
				})
			}()
		}
	}()
	go func() { // ends when the initial dials are done
		initial.Wait()
		close(w.readyCh)
	}()
	if w.cfg.Reconnect > 0 {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			<-w.readyCh
			w.reconnector()
		}()
	}
}

// reconnector closes cfg.Reconnect of the connections per minute, spread
// evenly, round robin; each comes back and resumes its rooms.
func (w *worker) reconnector() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	perSecond := w.cfg.Reconnect * float64(len(w.conns)) / 60
	budget, next := 0.0, 0
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-tick.C:
		}
		for budget += perSecond; budget >= 1; budget-- {
			c := w.conns[next]
			next = (next + 1) % len(w.conns)
			c.mu.Lock()
			if c.t != nil {
				c.planned.Store(true)
				c.t.close()
			}
			c.mu.Unlock()
		}
	}
}

func (w *worker) reset() {
	w.rec.reset()
	w.cpuAtReset, _ = procCPU("self")
}

func (w *worker) snapshot() Stats {
	s := w.rec.snapshot()
	cpu, _ := procCPU("self")
	s.CPUSeconds = cpu - w.cpuAtReset
	s.Established = int(w.established.Load())
	s.Failed = int(w.failed.Load())
	s.Open = int(w.open.Load())
	return s
}

// stop closes every connection and waits for their goroutines.
func (w *worker) stop() {
	w.cancel()
	for _, c := range w.conns {
		c.mu.Lock()
		if c.t != nil {
			c.t.close()
		}
		c.mu.Unlock()
	}
	w.wg.Wait()
}

// clientConn is one connection's state, owned by its goroutine except for
// t (guarded by mu, so that stop and the reconnector can close it).
type clientConn struct {
	w  *worker
	gi int
	sh *counters

	rooms []int    // rooms held for the whole run
	last  []uint64 // last seq held per room, for gap detection and resume

	churnRoom int // the room churn is in, -1 when none
	churnLast uint64

	joinSent int64 // unix nanos of the latest join: older updates are snapshots
	pending  int   // joins awaiting their reply
	ackID    int64 // the churn command awaiting its reply
	acked    bool
	refused  bool // the awaited reply was an error
	cmd      []byte
	buf      []byte

	mu      sync.Mutex
	t       transport
	planned atomic.Bool // closed by the reconnector: come back at once
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// run dials and joins, calls initial once with the outcome, then serves
// the connection until the worker stops, coming back after a planned
// reconnect (at once) or a lost connection (with backoff).
func (c *clientConn) run(ctx context.Context, initial func(bool)) {
	err := c.connect(ctx)
	initial(err == nil)
	if err != nil {
		c.w.rec.disconnect("connect_" + disconnectReason(err))
		return
	}
	backoff := time.Second
	for {
		c.w.open.Add(1)
		err := c.serve(ctx)
		c.w.open.Add(-1)
		c.mu.Lock()
		c.t.close()
		c.t = nil
		c.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if c.planned.Swap(false) {
			c.sh.reconnects.Add(1)
		} else {
			c.w.rec.disconnect(disconnectReason(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
		}
		for c.connect(ctx) != nil {
			c.w.rec.disconnect("reconnect_failed")
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
		}
		backoff = time.Second
	}
}

// connect dials, joins the connection's rooms (resuming after the last seq
// held, if any) and waits for their replies.
func (c *clientConn) connect(ctx context.Context) error {
	t, err := dial(ctx, &c.w.cfg, c.gi)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if ctx.Err() != nil {
		c.mu.Unlock()
		t.close()
		return ctx.Err()
	}
	c.t = t
	c.planned.Store(false)
	c.mu.Unlock()
	fail := func(err error) error {
		c.mu.Lock()
		c.t.close()
		c.t = nil
		c.mu.Unlock()
		return err
	}
	c.joinSent = time.Now().UnixNano()
	c.pending = len(c.rooms)
	for j, r := range c.rooms {
		c.cmd = append(c.cmd[:0], `{"op":"join","room":"r`...)
		c.cmd = strconv.AppendInt(c.cmd, int64(r), 10)
		c.cmd = append(c.cmd, '"')
		if c.last[j] > 0 {
			c.cmd = append(c.cmd, `,"since":`...)
			c.cmd = strconv.AppendUint(c.cmd, c.last[j], 10)
		}
		c.cmd = append(c.cmd, '}')
		if err := t.send(c.cmd); err != nil {
			return fail(err)
		}
	}
	if c.pending == 0 {
		return nil
	}
	_ = t.setReadDeadline(time.Now().Add(c.w.cfg.Timeout))
	for c.pending > 0 {
		if err := c.readFrame(t); err != nil {
			return fail(err)
		}
	}
	_ = t.setReadDeadline(time.Time{})
	return nil
}

// serve reads until the connection fails; in churn it joins and leaves a
// room in a loop meanwhile.
func (c *clientConn) serve(ctx context.Context) error {
	t := c.t
	if !c.w.cfg.Churn {
		for {
			if err := c.readFrame(t); err != nil {
				return err
			}
		}
	}
	var interval time.Duration
	if c.w.cfg.ChurnRate > 0 {
		interval = time.Duration(float64(time.Second) / c.w.cfg.ChurnRate)
	}
	others := c.w.cfg.Rooms - len(c.rooms)
	base := c.gi*c.w.cfg.RoomsPerConn + len(c.rooms)
	next := time.Now()
	for n := 0; ctx.Err() == nil; n++ {
		room := (base + (c.gi+n)%others) % c.w.cfg.Rooms
		for _, op := range []string{"join", "leave"} {
			if interval > 0 {
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
			}
			c.ackID++
			c.acked = false
			c.cmd = append(c.cmd[:0], `{"op":"`...)
			c.cmd = append(c.cmd, op...)
			c.cmd = append(c.cmd, `","room":"r`...)
			c.cmd = strconv.AppendInt(c.cmd, int64(room), 10)
			c.cmd = append(c.cmd, `","id":`...)
			c.cmd = strconv.AppendInt(c.cmd, c.ackID, 10)
			c.cmd = append(c.cmd, '}')
			if op == "join" {
				c.churnRoom, c.churnLast = room, 0
				c.joinSent = time.Now().UnixNano()
			}
			// A refused leave (rate_limited) leaves the connection in the
			// room: send it again until it is done.
			for tries := 0; ; tries++ {
				if err := t.send(c.cmd); err != nil {
					return err
				}
				for !c.acked {
					if err := c.readFrame(t); err != nil {
						return err
					}
				}
				if !c.refused || op == "join" || tries == 10 {
					break
				}
				if !sleep(ctx, 100*time.Millisecond) {
					return ctx.Err()
				}
				c.acked = false
			}
			if op == "leave" {
				c.churnRoom = -1
			}
		}
	}
	return ctx.Err()
}

// readFrame reads one frame and accounts for every message in it.
func (c *clientConn) readFrame(t transport) error {
	bp := bufPool.Get().(*[]byte)
	buf, err := t.next(*bp)
	if err != nil {
		*bp = buf[:0]
		bufPool.Put(bp)
		return err
	}
	now := time.Now().UnixNano()
	var updates, delivered, latSum, latMax uint64
	rest := buf
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		m := scanMessage(line)
		switch m.kind {
		case kindUpdate:
			updates++
			lat, live := c.update(&m, now)
			if live {
				delivered++
				if lat > 0 {
					c.sh.hist.record(lat)
					latSum += lat
					latMax = max(latMax, lat)
				}
			}
		case kindJoined:
			c.sh.joined.Add(1)
			c.ack(&m)
		case kindLeft:
			c.sh.left.Add(1)
			c.ack(&m)
		case kindError:
			c.w.rec.errorReply(string(m.code))
			c.ack(&m)
		}
	}
	*bp = buf[:0]
	bufPool.Put(bp)
	if updates > 0 {
		c.sh.frames.Add(1)
		c.sh.frameMsgs.Add(updates)
	}
	if delivered > 0 {
		c.sh.deliveries.Add(delivered)
		if latSum > 0 {
			c.sh.latSum.Add(latSum)
			c.sh.latCount.Add(delivered)
			for {
				m := c.sh.latMax.Load()
				if latMax <= m || c.sh.latMax.CompareAndSwap(m, latMax) {
					break
				}
			}
		}
	}
	return nil
}

func (c *clientConn) ack(m *message) {
	if c.pending > 0 && !m.hasID {
		c.pending-- // a reply to one of connect's joins (or an error about one)
		return
	}
	if m.hasID && m.id == c.ackID {
		c.acked = true
		c.refused = m.kind == kindError
	}
}

// update checks an update's sequence against the last one held for its
// room and returns its latency and whether it is live (published after the
// join; snapshots and resumed updates are not).
func (c *clientConn) update(m *message, now int64) (uint64, bool) {
	var last *uint64
	if idx, ok := roomIndex(m.room); ok {
		for j, r := range c.rooms {
			if r == idx {
				last = &c.last[j]
				break
			}
		}
		if last == nil && idx == c.churnRoom {
			last = &c.churnLast
		}
	}
	if last == nil {
		c.w.rec.errorReply("stray_update")
		return 0, false
	}
	if m.hasSeq {
		if *last != 0 {
			if m.seq <= *last {
				c.sh.dups.Add(1)
				return 0, false
			}
			if m.prev != *last {
				c.sh.gaps.Add(1)
			}
		}
		*last = m.seq
	} else {
		c.sh.noSeq.Add(1)
	}
	if m.tsNano == 0 {
		return 0, true
	}
	if m.tsNano < c.joinSent {
		c.sh.replayed.Add(1)
		return 0, false
	}
	if now <= m.tsNano {
		return 1, true
	}
	return uint64(now - m.tsNano), true
}
