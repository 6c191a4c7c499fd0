package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/outbox"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// The raw server is the baseline a gateway run is compared with. It does
// what the gateway must do for every delivery and nothing else: the same
// NATS subscriptions (one per room, with the same history stream and its
// sequence numbers), the update encoded once as the gateway encodes it,
// queued to each member's outbox (the gateway's own package, same limits),
// and a writer goroutine per connection that takes everything queued and
// writes it "\n"-joined as one unmasked WebSocket text frame — the bytes
// the gateway sends — with one write call and a write deadline per frame.
// What it leaves out is the gateway's own cost: WebSocket handshake and
// framing library, pings, metrics, rate limits, the hub's bookkeeping.
// Clients connect with plain TCP and send commands as JSON lines.
//
// One difference to know: gorilla/websocket writes a frame larger than its
// 4 KiB write buffer in several fragments (one write each); the raw server
// writes any frame at once. Frames in the workloads are under 4 KiB.

type rawConfig struct {
	listen string
	sourceConfig
	batchBytes int
	limits     outbox.Limits
}

func runRawServer(ctx context.Context, args []string, stderr io.Writer) error {
	def := config.Default()
	rc := rawConfig{
		sourceConfig: defaultSource(),
		batchBytes:   def.Queue.BatchBytes,
		limits:       outbox.Limits{ConflateAfter: def.Queue.ConflateAfter, MaxMessages: def.Queue.MaxMessages, MaxBytes: def.Queue.MaxBytes},
	}
	fs := flag.NewFlagSet("loadgen rawserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&rc.listen, "listen", "127.0.0.1:9100", "TCP address for the raw clients (loadgen --raw)")
	rc.sourceConfig.flags(fs)
	fs.IntVar(&rc.batchBytes, "batch-bytes", rc.batchBytes, "queue.batch_bytes: a batch is split into frames of about this size")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if _, err := raiseNoFile(); err != nil {
		log.Warn("cannot raise the open files limit", "err", err)
	}

	src, err := startSource(ctx, rc.sourceConfig, "roomcast-rawserver", log)
	if err != nil {
		return err
	}
	defer src.close()
	ln, err := net.Listen("tcp", rc.listen)
	if err != nil {
		return err
	}
	log.Info("rawserver listening", "addr", ln.Addr().String(), "nats", src.addr, "pid", os.Getpid(), "history", rc.history)
	s := newRawServer(rc, src.rooms, src.nc)
	return s.serve(ctx, ln)
}

type rawServer struct {
	cfg  rawConfig
	src  *broker.Rooms
	nc   *nats.Conn
	pool sync.Pool // frame buffers, held only while writing, like gorilla's write buffer pool

	mu    sync.Mutex
	rooms map[string]*rawRoom
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // connection goroutines
}

type rawRoom struct {
	name    string
	sub     broker.Subscription
	refs    int          // guarded by rawServer.mu
	scratch bytes.Buffer // owned by the subscription's delivery goroutine

	mu      sync.Mutex
	members []*outbox.Outbox
	index   map[*outbox.Outbox]int
	last    *outbox.Publication // latest update, the joiner's snapshot
}

func newRawServer(cfg rawConfig, src *broker.Rooms, nc *nats.Conn) *rawServer {
	return &rawServer{cfg: cfg, src: src, nc: nc, rooms: map[string]*rawRoom{}, conns: map[net.Conn]struct{}{}}
}

// serve accepts until ctx ends, then closes every connection and waits for
// their goroutines.
func (s *rawServer) serve(ctx context.Context, ln net.Listener) error {
	go func() { <-ctx.Done(); _ = ln.Close() }() // ends with ctx
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				if !errors.Is(err, net.ErrClosed) {
					time.Sleep(10 * time.Millisecond) // e.g. EMFILE: do not spin
					continue
				}
			}
			break
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// serveConn runs the connection's reader here and its writer on another
// goroutine, until the client goes.
func (s *rawServer) serveConn(c net.Conn) {
	box := outbox.New(s.cfg.limits, func() { _ = c.Close() })
	done := make(chan struct{})
	writerDone := make(chan struct{})
	go func() { // the writer: ends when the reader has ended or a write fails
		defer close(writerDone)
		s.writeLoop(c, box, done)
	}()
	joined := map[string]struct{}{}
	r := bufio.NewReaderSize(c, 1024)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			break
		}
		cmd, perr := protocol.ParseCommand(bytes.TrimSpace(line))
		switch {
		case perr != nil:
			box.Push(outbox.ErrorReply(perr))
		case cmd.Op == protocol.OpJoin:
			if err := s.join(box, cmd); err != nil {
				box.Push(outbox.ErrorReply(&protocol.Error{Code: "internal", Message: err.Error(), Room: cmd.Room}))
				continue
			}
			joined[cmd.Room] = struct{}{}
		default:
			s.leave(box, cmd.Room)
			delete(joined, cmd.Room)
			box.Push(outbox.Message{Reply: &outbox.Reply{Kind: outbox.Left, Room: cmd.Room, ID: cmd.ID, HasID: cmd.HasID}})
		}
	}
	close(done)
	for room := range joined {
		s.leave(box, room)
	}
	box.Close()
	_ = c.Close()
	<-writerDone
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *rawServer) join(box *outbox.Outbox, cmd protocol.Command) error {
	s.mu.Lock()
	r := s.rooms[cmd.Room]
	if r == nil {
		r = &rawRoom{name: cmd.Room, index: map[*outbox.Outbox]int{}}
		sub, err := s.src.Subscribe(cmd.Room, func(d broker.Delivery) { s.deliver(r, d) })
		if err != nil {
			s.mu.Unlock()
			return err
		}
		r.sub = sub
		s.rooms[cmd.Room] = r
	}
	r.mu.Lock()
	if _, in := r.index[box]; !in {
		r.refs++
		r.index[box] = len(r.members)
		r.members = append(r.members, box)
	}
	box.Push(outbox.Message{Reply: &outbox.Reply{Kind: outbox.Joined, Room: cmd.Room, ID: cmd.ID, HasID: cmd.HasID}})
	if r.last != nil {
		box.Push(outbox.Message{Pub: r.last, Snapshot: true})
	}
	r.mu.Unlock()
	s.mu.Unlock()
	return nil
}

func (s *rawServer) leave(box *outbox.Outbox, room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[room]
	if r == nil {
		return
	}
	r.mu.Lock()
	i, in := r.index[box]
	if in {
		last := len(r.members) - 1
		r.members[i] = r.members[last]
		r.index[r.members[i]] = i
		r.members[last] = nil
		r.members = r.members[:last]
		delete(r.index, box)
		r.refs--
	}
	empty := r.refs == 0
	r.mu.Unlock()
	if empty {
		delete(s.rooms, room)
		_ = r.sub.Unsubscribe()
	}
}

// deliver encodes the update once and queues it to every member; it runs on
// the room subscription's goroutine.
func (s *rawServer) deliver(r *rawRoom, d broker.Delivery) {
	r.scratch.Reset()
	if len(d.Payload) > s.cfg.maxUpdate || protocol.CompactPayload(&r.scratch, d.Payload) != nil {
		return
	}
	pub := outbox.NewPublication(r.name, d.Seq, d.Prev, false, bytes.Clone(r.scratch.Bytes()), 0)
	pub.JSON() // encoded once, here, as the gateway's first writer does
	msg := outbox.Message{Pub: pub}
	r.mu.Lock()
	r.last = pub
	for _, m := range r.members {
		m.Push(msg)
	}
	r.mu.Unlock()
}

const rawWriteTimeout = 10 * time.Second

func (s *rawServer) writeLoop(c net.Conn, box *outbox.Outbox, done <-chan struct{}) {
	var batch []outbox.Message
	for {
		select {
		case <-done:
			return
		case <-box.Ready():
		}
		var overflowed bool
		batch, overflowed = box.Take(batch)
		if overflowed {
			return // the overflow callback closed the connection
		}
		if err := s.writeBatch(c, batch); err != nil {
			_ = c.Close()
			return
		}
		clear(batch)
	}
}

// rawText is m's native JSON: an update's is shared, a reply's is made.
func rawText(m *outbox.Message) []byte {
	if m.Pub != nil {
		return m.Pub.JSON()
	}
	return m.AppendJSON(nil)
}

// writeBatch writes the batch as frames of about batchBytes, the messages
// of a frame joined with "\n", one write call per frame.
func (s *rawServer) writeBatch(c net.Conn, batch []outbox.Message) error {
	for len(batch) > 0 {
		size, n := 0, 0
		for n < len(batch) && (n == 0 || size+len(rawText(&batch[n])) < s.cfg.batchBytes) {
			if n > 0 {
				size++
			}
			size += len(rawText(&batch[n]))
			n++
		}
		bp, _ := s.pool.Get().(*[]byte)
		if bp == nil {
			bp = new([]byte)
		}
		buf := appendFrameHeader((*bp)[:0], size)
		for i, m := range batch[:n] {
			if i > 0 {
				buf = append(buf, '\n')
			}
			buf = append(buf, rawText(&m)...)
		}
		if err := c.SetWriteDeadline(time.Now().Add(rawWriteTimeout)); err != nil {
			return err
		}
		_, err := c.Write(buf)
		*bp = buf[:0]
		s.pool.Put(bp)
		if err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// appendFrameHeader appends the header of a final, unmasked text frame.
func appendFrameHeader(b []byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, 0x81, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 0x81, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0x81, 127), uint64(n))
	}
}
