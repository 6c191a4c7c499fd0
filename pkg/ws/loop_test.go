//go:build linux

package ws

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"weak"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/roomcast/roomcast/internal/logtest"
	"github.com/roomcast/roomcast/internal/sockettest"
	"github.com/roomcast/roomcast/internal/uring"
	"github.com/roomcast/roomcast/pkg/client"
	"github.com/roomcast/roomcast/pkg/hub"
	"github.com/roomcast/roomcast/pkg/metrics"
	"github.com/roomcast/roomcast/pkg/outbox"
)

// loopRig serves /ws sessions written by a Writer's loops on 127.0.0.1.
type loopRig struct {
	t       *testing.T
	cfg     Config
	rules   *client.Rules
	m       *metrics.Metrics
	writer  *Writer
	poller  *Poller
	srv     *httptest.Server
	started chan *Session
	done    sync.WaitGroup
	ended   atomic.Int64
}

// forEachPath runs a loop-writer test on write(2) and, where this
// kernel allows it, on io_uring.
func forEachPath(t *testing.T, test func(t *testing.T, path string)) {
	for _, path := range []string{PathWrite, PathURing} {
		t.Run(path, func(t *testing.T) {
			if path == PathURing {
				if err := uring.Available(); err != nil {
					t.Skipf("io_uring not allowed here (the gateway writes with write(2)): %v", err)
				}
			}
			test(t, path)
		})
	}
}

// newLoopRig starts the rig with a writer on path (PathWrite or PathURing).
func newLoopRig(t *testing.T, cfg Config, path string) *loopRig {
	t.Helper()
	mode := "off"
	if path == PathURing {
		mode = "on"
	}
	return newLoopRigWith(t, cfg, WriterConfig{Loops: 2, URing: mode}, slog.New(slog.DiscardHandler))
}

// newLoopRigWith starts the rig with a writer made from wcfg, logging to
// log.
func newLoopRigWith(t *testing.T, cfg Config, wcfg WriterConfig, log *slog.Logger) *loopRig {
	t.Helper()
	reg := prometheus.NewRegistry()
	r := &loopRig{t: t, m: metrics.New(reg), started: make(chan *Session, 1024)}
	w, err := NewWriter(log, wcfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"on": PathURing, "off": PathWrite}[wcfg.URing]; want != "" && w.Path() != want {
		t.Fatalf("writer path %s, want %s", w.Path(), want)
	}
	p, err := NewPoller(log, r.m)
	if err != nil {
		t.Fatal(err)
	}
	r.writer, r.poller = w, p
	if cfg.PingInterval == 0 {
		cfg.PingInterval, cfg.PongTimeout = time.Minute, 30*time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = 32 << 10
	}
	if cfg.Outbox.MaxMessages == 0 {
		cfg.Outbox = outbox.Limits{ConflateAfter: 1 << 20, MaxMessages: 1 << 20, MaxBytes: 256 << 20}
	}
	cfg.MaxFrameBytes = 4096
	cfg.Writer, cfg.Poller = w, p
	r.cfg = cfg
	r.rules = client.NewRules(hub.New(nil, hub.Options{}, r.m, reg, log), client.Options{MaxRooms: 4, CommandRate: 100, CommandBurst: 100}, r.m)
	up := websocket.Upgrader{}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		c, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		s := New(c, r.rules, r.cfg, nil, r.m, log)
		if s.lp.loop == nil {
			t.Error("the session is not written by the loop writer")
		}
		r.done.Add(1)
		s.Start(func() { r.ended.Add(1); r.done.Done() })
		r.started <- s
	}))
	r.srv.Listener = Listener(r.srv.Listener)
	r.srv.Start()
	t.Cleanup(func() {
		r.srv.Close()
		r.done.Wait()
		r.writer.Close()
		r.poller.Close()
	})
	return r
}

// dial opens a raw client connection (rcvbuf > 0 sets its receive
// buffer), does the handshake, and returns it with its session.
func (r *loopRig) dial(rcvbuf int) (net.Conn, *bufio.Reader, *Session) {
	r.t.Helper()
	c, err := sockettest.Dialer(rcvbuf).Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		r.t.Fatal(err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		r.t.Fatalf("handshake: %v %v", resp, err)
	}
	select {
	case s := <-r.started:
		return c, br, s
	case <-time.After(5 * time.Second):
		r.t.Fatal("no session started")
	}
	return nil, nil, nil
}

// frame is one server frame as a strict parser sees it.
type frame struct {
	op      byte
	payload []byte
}

// readFrame reads one server frame and checks it is well formed: final,
// no reserved bits, unmasked, a known opcode, control frames short.
func readFrame(br *bufio.Reader) (frame, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return frame{}, err
	}
	if h[0]&0xF0 != 0x80 {
		return frame{}, fmt.Errorf("bad first byte %#x (FIN or RSV)", h[0])
	}
	op := h[0] & 0x0F
	if h[1]&0x80 != 0 {
		return frame{}, fmt.Errorf("masked server frame")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return frame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return frame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	switch op {
	case 0x1:
	case 0x8, 0x9, 0xA:
		if n > 125 {
			return frame{}, fmt.Errorf("control frame of %d bytes", n)
		}
	default:
		return frame{}, fmt.Errorf("unexpected opcode %#x", op)
	}
	if n > 16<<20 {
		return frame{}, fmt.Errorf("frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return frame{}, err
	}
	return frame{op, p}, nil
}

// answerClose answers the server's close frame f with a masked close
// frame carrying the same code, as a client does.
func answerClose(c net.Conn, f frame) {
	_, _ = c.Write([]byte{0x88, 0x82, 0, 0, 0, 0, f.payload[0], f.payload[1]})
}

// numbered is update i of room r, with a payload of pad bytes.
func numbered(room string, i, pad int) outbox.Message {
	data := fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", pad))
	return outbox.Message{Pub: outbox.NewPublication(room, uint64(i), uint64(i-1), false, []byte(data), 0)}
}

// seqs returns the seq numbers of the updates in a text frame.
func seqs(t *testing.T, payload []byte) []int {
	t.Helper()
	var out []int
	for _, line := range strings.Split(string(payload), "\n") {
		i := strings.Index(line, `"seq":`)
		if i < 0 || !strings.HasPrefix(line, `{"op":"update"`) || !strings.HasSuffix(line, "}}") {
			t.Fatalf("not a whole update: %.80q", line)
		}
		j := i + len(`"seq":`)
		k := j
		for k < len(line) && line[k] >= '0' && line[k] <= '9' {
			k++
		}
		n, err := strconv.Atoi(line[j:k])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// TestLoopManySessions: 500 clients that keep reading get a stream of
// updates written by the loops; no goroutine is started per delivery (the
// count stays flat while updates flow), every update arrives in order,
// and after the sessions close the goroutines are back at the baseline.
func TestLoopManySessions(t *testing.T) { forEachPath(t, testLoopManySessions) }

func testLoopManySessions(t *testing.T, path string) {
	const clients, updates = 500, 40
	baseline := runtime.NumGoroutine()
	r := newLoopRig(t, Config{}, path)
	type cl struct {
		c    net.Conn
		br   *bufio.Reader
		s    *Session
		last atomic.Int64
	}
	cls := make([]*cl, clients)
	for i := range cls {
		c, br, s := r.dial(0)
		cls[i] = &cl{c: c, br: br, s: s}
	}
	var readers sync.WaitGroup
	errs := make(chan error, clients)
	for _, c := range cls {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				f, err := readFrame(c.br)
				if err != nil {
					errs <- err
					return
				}
				if f.op == 0x8 {
					answerClose(c.c, f) // as a client does, then stop
					return
				}
				for _, n := range seqs(t, f.payload) {
					if int64(n) != c.last.Load()+1 {
						errs <- fmt.Errorf("update %d after %d", n, c.last.Load())
						return
					}
					c.last.Store(int64(n))
				}
			}
		}()
	}
	// Everything is set up: the writer's loops, the poller, the client
	// readers. From here on a delivery may not add a goroutine.
	flat := runtime.NumGoroutine()
	peak := flat
	for u := 1; u <= updates; u++ {
		for _, c := range cls {
			c.s.box.Push(numbered("r", u, 40))
		}
		peak = max(peak, runtime.NumGoroutine())
		time.Sleep(2 * time.Millisecond) // a producer's pace, not a synchronisation
		peak = max(peak, runtime.NumGoroutine())
	}
	waitUntil(t, 20*time.Second, "every client got every update", func() bool {
		peak = max(peak, runtime.NumGoroutine())
		for _, c := range cls {
			if c.last.Load() != updates {
				return false
			}
		}
		return true
	})
	if peak > flat+3 {
		t.Errorf("goroutines rose from %d to %d while updates flowed: a goroutine per delivery?", flat, peak)
	}
	if n := counterValue(r.m.MessagesSent); n != clients*updates {
		t.Errorf("MessagesSent %v, want %d", n, clients*updates)
	}
	sends, subs := r.writer.RingStats()
	if path == PathURing {
		// Each update is pushed to all 500 before the loops take them:
		// the sends of a turn must go to the kernel together. (A frame
		// may carry several updates, so there are fewer sends than
		// deliveries, but at least one per client.)
		// (About 150 per submission on an idle machine; the bound is
		// low so that a loaded one, where a loop may catch up with the
		// pusher, does not fail it.)
		t.Logf("io_uring: %d sends in %d submissions", sends, subs)
		if sends < clients || subs == 0 || sends/subs < 2 {
			t.Errorf("io_uring: %d sends in %d submissions; want at least %d sends, 2 or more per submission", sends, subs, clients)
		}
	} else if sends != 0 {
		t.Errorf("%d sends through io_uring on the write(2) path", sends)
	}
	for _, c := range cls {
		c.s.Close(1000, "bye")
	}
	readers.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	waitUntil(t, 10*time.Second, "every session ended", func() bool { return r.ended.Load() == clients })
	r.srv.Close()
	r.writer.Close()
	r.poller.Close()
	for _, c := range cls {
		c.c.Close()
	}
	waitUntil(t, 10*time.Second, fmt.Sprintf("goroutines back to %d", baseline), func() bool {
		return runtime.NumGoroutine() <= baseline+2
	})
}

// setSndbuf makes the server side of s's socket small, so that writes
// soon find it full.
func setSndbuf(t *testing.T, s *Session, n int) {
	t.Helper()
	if err := s.lp.raw.Control(func(fd uintptr) {
		if err := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// TestLoopSlowReaderResume: a client that reads slowly makes the socket
// would-block again and again; the loop keeps what did not fit, resumes
// on EPOLLOUT, and every byte arrives in order.
func TestLoopSlowReaderResume(t *testing.T) { forEachPath(t, testLoopSlowReaderResume) }

func testLoopSlowReaderResume(t *testing.T, path string) {
	const updates = 3000
	r := newLoopRig(t, Config{MaxBatchBytes: 8 << 10}, path)
	c, br, s := r.dial(4096)
	setSndbuf(t, s, 4096)
	for u := 1; u <= updates; u++ {
		s.box.Push(numbered("r", u, 300))
	}
	last := 0
	for last < updates {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := readFrame(br)
		if err != nil {
			t.Fatalf("after update %d: %v", last, err)
		}
		if f.op != 0x1 {
			continue
		}
		for _, n := range seqs(t, f.payload) {
			if n != last+1 {
				t.Fatalf("update %d after %d", n, last)
			}
			last = n
		}
		if last%100 == 0 {
			time.Sleep(time.Millisecond) // read slowly
		}
	}
	s.lp.mu.Lock()
	registered := s.lp.registered
	s.lp.mu.Unlock()
	if !registered {
		t.Error("the socket never would-block: the test did not exercise EPOLLOUT")
	}
}

// TestLoopWriteTimeout: a client that stops reading is ended after
// write_timeout without progress, while a client beside it is served.
func TestLoopWriteTimeout(t *testing.T) { forEachPath(t, testLoopWriteTimeout) }

func testLoopWriteTimeout(t *testing.T, path string) {
	const timeout = 300 * time.Millisecond
	r := newLoopRig(t, Config{WriteTimeout: timeout}, path)
	_, _, stuck := r.dial(4096)
	setSndbuf(t, stuck, 4096)
	c, br, live := r.dial(0)
	var got atomic.Int64
	go func() {
		for {
			f, err := readFrame(br)
			if err != nil {
				return
			}
			if f.op == 0x1 {
				got.Add(int64(len(seqs(t, f.payload))))
			}
		}
	}()
	start := time.Now()
	var endedAt time.Time
	for u := 1; time.Since(start) < 5*time.Second; u++ {
		stuck.box.Push(numbered("r", u, 1000))
		live.box.Push(numbered("r", u, 1000))
		if endedAt.IsZero() && stuck.isEnded() {
			endedAt = time.Now()
		}
		if !endedAt.IsZero() && time.Since(endedAt) > 200*time.Millisecond {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if endedAt.IsZero() {
		t.Fatal("the client that stopped reading was not ended")
	}
	if d := endedAt.Sub(start); d < timeout {
		t.Errorf("ended after %v, before write_timeout %v", d, timeout)
	}
	if live.isEnded() {
		t.Fatal("the reading client was ended too")
	}
	before := got.Load()
	live.box.Push(numbered("r", 1<<20, 10))
	waitUntil(t, 5*time.Second, "the reading client is still served", func() bool { return got.Load() > before })
	if n := counterValue(r.m.SlowDisconnects); n != 0 {
		t.Errorf("%v slow (4008) disconnects; the stall should have been a write timeout", n)
	}
	_ = c
}

// TestLoopPingInsidePartialFrame: a ping and a pong sent while a large
// data frame is only partly written wait for it; the client's strict
// parser sees valid frames only, the data intact.
func TestLoopPingInsidePartialFrame(t *testing.T) { forEachPath(t, testLoopPingInsidePartialFrame) }

func testLoopPingInsidePartialFrame(t *testing.T, path string) {
	r := newLoopRig(t, Config{MaxBatchBytes: 1 << 20}, path)
	c, br, s := r.dial(4096)
	setSndbuf(t, s, 4096)
	for u := 1; u <= 200; u++ {
		s.box.Push(numbered("r", u, 2000)) // about 400 KB in one frame
	}
	waitUntil(t, 5*time.Second, "the frame is partly written", func() bool {
		s.lp.mu.Lock()
		defer s.lp.mu.Unlock()
		return len(s.lp.out) > 0 && s.lp.armed
	})
	_ = s.writeControl(websocket.PingMessage, []byte("ping-1"), time.Second)
	_ = s.writeControl(websocket.PongMessage, []byte("pong-1"), time.Second)
	for u := 201; u <= 210; u++ {
		s.box.Push(numbered("r", u, 20))
	}
	last, controls := 0, 0
	for last < 210 || controls < 2 {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := readFrame(br)
		if err != nil {
			t.Fatalf("after update %d, %d control frames: %v", last, controls, err)
		}
		switch f.op {
		case 0x9, 0xA:
			controls++
		case 0x1:
			for _, n := range seqs(t, f.payload) {
				if n != last+1 {
					t.Fatalf("update %d after %d", n, last)
				}
				last = n
			}
		}
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// TestWriterURingRefused: a kernel that refuses io_uring (seccomp,
// kernel.io_uring_disabled) leaves io.uring auto on write(2), said in the
// log, and io.uring on without a writer, with an error that says why.
func TestWriterURingRefused(t *testing.T) {
	refuse := func(uint32, *uring.Params) (int, error) { return -1, syscall.EPERM }
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	w, err := NewWriter(log, WriterConfig{Loops: 2, URing: "auto", URingSetup: refuse})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Path() != PathWrite {
		t.Errorf("path %s with io_uring refused, want %s", w.Path(), PathWrite)
	}
	for _, want := range []string{"io_uring not used", "operation not permitted", "path=write"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("log %q does not say %q", logged.String(), want)
		}
	}
	if _, err := NewWriter(log, WriterConfig{Loops: 2, URing: "on", URingSetup: refuse}); err == nil || !strings.Contains(err.Error(), "io_uring") {
		t.Errorf("io.uring on with io_uring refused: %v; want an error naming io_uring", err)
	}
}

// TestLoopRingFailed: when io_uring_enter fails (it should not; a kernel
// short of memory or a closed ring could), the loop whose submission
// failed ends the sessions whose sends got no result, says so in the log,
// and writes with write(2) from then on: its new sessions are served, as
// are the other loop's, which keeps its ring.
func TestLoopRingFailed(t *testing.T) {
	if err := uring.Available(); err != nil {
		t.Skipf("io_uring not allowed here: %v", err)
	}
	var failNext atomic.Bool
	enter := func(fd int, toSubmit, minComplete, flags uint32) (int, error) {
		if toSubmit > 0 && failNext.CompareAndSwap(true, false) {
			return 0, syscall.EBADF
		}
		return uring.Enter(fd, toSubmit, minComplete, flags)
	}
	log, logged := logtest.New()
	r := newLoopRigWith(t, Config{}, WriterConfig{Loops: 2, URing: "on", URingEnter: enter}, log)

	type cl struct {
		s      *Session
		last   atomic.Int64
		closed atomic.Bool
	}
	var cls []*cl
	dial := func(n int) []*cl {
		var out []*cl
		for range n {
			c, br, s := r.dial(0)
			x := &cl{s: s}
			go func() {
				defer x.closed.Store(true)
				for {
					f, err := readFrame(br)
					if err != nil || f.op == 0x8 {
						return
					}
					for _, n := range seqs(t, f.payload) {
						// A client dialled later starts at the next update.
						if last := x.last.Load(); last != 0 && int64(n) != last+1 {
							t.Errorf("update %d after %d", n, last)
							return
						}
						x.last.Store(int64(n))
					}
				}
			}()
			_ = c
			out = append(out, x)
		}
		cls = append(cls, out...)
		return out
	}
	// push sends update u to every client still open and waits until
	// each has it or has been closed.
	push := func(u int) {
		t.Helper()
		for _, c := range cls {
			if !c.closed.Load() {
				c.s.box.Push(numbered("r", u, 40))
			}
		}
		waitUntil(t, 10*time.Second, fmt.Sprintf("every client got update %d or was closed", u), func() bool {
			for _, c := range cls {
				if c.last.Load() < int64(u) && !c.closed.Load() {
					return false
				}
			}
			return true
		})
	}

	first := dial(20)
	push(1)
	for _, c := range first {
		if c.closed.Load() {
			t.Fatal("a client was closed before io_uring failed")
		}
	}
	failNext.Store(true)
	push(2)
	if failNext.Load() {
		t.Fatal("no submission after the failure was armed")
	}
	var failed *evloop
	ended := 0
	lost := map[*cl]bool{}
	for _, c := range first {
		if !c.closed.Load() {
			continue
		}
		ended++
		lost[c] = true
		if failed != nil && c.s.lp.loop != failed {
			t.Fatal("sessions of both loops ended; only the failed loop's sends lost their result")
		}
		failed = c.s.lp.loop
	}
	if ended == 0 {
		t.Fatal("no session ended, though its send got no result")
	}
	if n := r.writer.RingFailures(); n != 1 {
		t.Errorf("RingFailures %d, want 1", n)
	}
	waitUntil(t, 5*time.Second, "the log says io_uring failed", func() bool {
		return strings.Contains(logged.String(), "io_uring failed") && strings.Contains(logged.String(), "bad file descriptor")
	})
	// New sessions, some on the failed loop, now written with write(2).
	more := dial(10)
	onFailed := 0
	for _, c := range more {
		if c.s.lp.loop == failed {
			onFailed++
		}
	}
	if onFailed == 0 {
		t.Fatal("no new session on the loop whose ring failed")
	}
	for u := 3; u <= 5; u++ {
		push(u)
	}
	// The failed submission held the sends of some of that loop's
	// sessions (how many depends on how far the loop had got when the
	// updates were pushed); every other session got every update.
	for i, c := range cls {
		if c.closed.Load() != lost[c] || (!lost[c] && c.last.Load() != 5) {
			t.Errorf("client %d (on the failed loop: %v, its send lost: %v): closed %v, last update %d", i, c.s.lp.loop == failed, lost[c], c.closed.Load(), c.last.Load())
		}
	}
	t.Logf("%d of %d sessions ended with the failed submission; %d new sessions on that loop served by write(2)", ended, len(first), onFailed)
}

// TestLoopEndedSessionsCollected: nothing of the writer keeps a session
// once it has ended, however it ended: closed by the gateway, by the
// client mid-stream, or by write_timeout while its socket was full and
// its loop held it as stalled, armed for EPOLLOUT. A session kept by a
// map or a timer would be a leak of a few KiB per reconnect, which a
// long soak with reconnects (W5) shows only as a slow RSS climb.
func TestLoopEndedSessionsCollected(t *testing.T) { forEachPath(t, testLoopEndedSessionsCollected) }

func testLoopEndedSessionsCollected(t *testing.T, path string) {
	const perKind, rounds = 10, 3
	r := newLoopRig(t, Config{WriteTimeout: 200 * time.Millisecond}, path)
	var gone []weak.Pointer[Session]
	total := 0
	for range rounds {
		var conns []net.Conn
		var stalled, closedByUs, closedByClient []*Session
		for i := range 3 * perKind {
			rcvbuf := 0
			if i%3 == 0 {
				rcvbuf = 4096
			}
			c, br, s := r.dial(rcvbuf)
			conns = append(conns, c)
			gone = append(gone, weak.Make(s))
			switch i % 3 {
			case 0:
				setSndbuf(t, s, 4096) // never read: it fills and stalls
				stalled = append(stalled, s)
			case 1:
				closedByUs = append(closedByUs, s)
				go func() { // reads until the close, and answers it
					for {
						f, err := readFrame(br)
						if err != nil {
							return
						}
						if f.op == 0x8 {
							answerClose(c, f)
							return
						}
					}
				}()
			case 2:
				closedByClient = append(closedByClient, s)
				go func() { _, _ = io.Copy(io.Discard, br) }()
			}
		}
		total += len(conns)
		for u := 1; u <= 50; u++ {
			for _, group := range [][]*Session{stalled, closedByUs, closedByClient} {
				for _, s := range group {
					s.box.Push(numbered("r", u, 1000))
				}
			}
		}
		waitUntil(t, 5*time.Second, "the stalled sessions are armed for EPOLLOUT", func() bool {
			for _, s := range stalled {
				s.lp.mu.Lock()
				armed := s.lp.armed || s.isEnded()
				s.lp.mu.Unlock()
				if !armed {
					return false
				}
			}
			return true
		})
		for _, s := range closedByUs {
			s.Close(1000, "bye")
		}
		for i := 2; i < len(conns); i += 3 {
			conns[i].Close()
		}
		want := int64(total)
		waitUntil(t, 10*time.Second, "every session ended", func() bool { return r.ended.Load() == want })
		for _, c := range conns {
			c.Close()
		}
	}
	waitUntil(t, 10*time.Second, "every ended session collected", func() bool {
		runtime.GC()
		for _, p := range gone {
			if p.Value() != nil {
				return false
			}
		}
		return true
	})
}
