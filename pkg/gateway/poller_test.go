package gateway_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
)

// TestPollerDescriptorReuse: connections opened and closed in a tight loop,
// by the client and by the gateway, while their commands are still being
// read and updates written, so that descriptor numbers are reused while
// events for their previous owners are in flight. Under -race: no second
// reader of a connection (the race detector would see two readers on one
// frame parser), no panic, no poller error, and everything is released.
func TestPollerDescriptorReuse(t *testing.T) {
	for _, writer := range writers {
		t.Run(writer, func(t *testing.T) {
			testPollerDescriptorReuse(t, writer)
		})
	}
}

func testPollerDescriptorReuse(t *testing.T, writer string) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux-only")
	}
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	useWriter(&cfg, writer)
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, ns)
	baseline := roomtest.Goroutines()

	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Add(1)
	go func() { // updates keep the writers busy while connections churn
		defer pub.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = nc.Publish(salesSubject, []byte(`{"v":1}`))
			}
		}
	}()

	const workers, perWorker = 8, 150
	deadline := time.Now().Add(4 * time.Second) // bounds the test on a loaded machine
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var opened [workers]int
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker && time.Now().Before(deadline); i++ {
				if err := shortLived(g.Addr().String(), w+i); err != nil {
					errs <- err
					return
				}
				opened[w]++
			}
		}()
	}
	wg.Wait()
	close(stop)
	pub.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, n := range opened {
		total += n
	}
	t.Logf("%d connections opened and closed", total)

	// A connection the clients have finished with may still be between
	// accept and its session (not yet in roomcast_connections) and join
	// after the gauge read 0: wait for all three to settle together.
	roomtest.Eventually(t, 15*time.Second, func() error {
		if n := metric(t, g, "roomcast_tcp_connections"); n != 0 {
			return fmt.Errorf("%v TCP connections open", n)
		}
		if n := metric(t, g, "roomcast_connections"); n != 0 {
			return fmt.Errorf("%v connections open", n)
		}
		if n := g.Hub().Rooms(); n != 0 {
			return fmt.Errorf("hub still has %d rooms", n)
		}
		return nil
	})
	if n := metric(t, g, "roomcast_poller_errors_total"); n != 0 {
		t.Fatalf("roomcast_poller_errors_total = %v, want 0", n)
	}
	roomtest.WaitGoroutines(t, baseline)
}

// shortLived opens a connection, sends a burst of frames without waiting
// for answers and ends it in one of four ways, two of them the client's
// (vanish, close frame) and two the gateway's (a binary frame, a frame
// over max_frame_bytes), each with frames still following.
func shortLived(addr string, i int) error {
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	send := func(typ int, p string) { _ = conn.WriteMessage(typ, []byte(p)) }
	send(websocket.TextMessage, `{"op":"join","room":"sales"}`)
	_ = conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
	switch i % 4 {
	case 0:
		// vanish at once: the join may still be unread
	case 1:
		send(websocket.TextMessage, `{"op":"leave","room":"sales"}`)
		send(websocket.CloseMessage, string(websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")))
	case 2:
		send(websocket.BinaryMessage, "x")
		send(websocket.TextMessage, `{"op":"join","room":"sales"}`)
	case 3:
		send(websocket.TextMessage, fmt.Sprintf(`{"op":"join","room":"%05000d"}`, i))
		send(websocket.TextMessage, `{"op":"leave","room":"sales"}`)
	}
	return conn.NetConn().Close()
}

// TestEveryCommandAnswered: a thousand connections send join and leave
// commands in bursts of 1 to 5 (or 100, more than one read buffer), each
// burst one frame per write, all frames in one write, or all frames split
// at a random byte into two writes (so that a read ends inside a frame
// and the rest comes as a new edge), and every
// command is answered, in order, by id. The poller is edge-triggered and
// never re-armed: an event dropped while a connection is being read, or
// a read wrongly taken as the socket's last, leaves a command unread and
// its client waiting, which is what this test would see.
func TestEveryCommandAnswered(t *testing.T) {
	for _, writer := range writers {
		t.Run(writer, func(t *testing.T) { everyCommandAnswered(t, writer) })
	}
}

func everyCommandAnswered(t *testing.T, writer string) {
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	useWriter(&cfg, writer)
	cfg.Limits.CommandsPerSecond = 10000 // the budget is not what is tested
	cfg.Limits.CommandBurst = 10000
	g := roomtest.StartGateway(t, cfg)

	conns, rounds := 1000, 10
	if roomtest.Race {
		conns = 200
	}
	clients := make([]*roomtest.Client, conns)
	for i := range clients {
		clients[i] = roomtest.Dial(t, g)
	}
	frame := func(p string) []byte { // masked with a zero key, as a client must mask
		return append([]byte{0x81, 0x80 | byte(len(p)), 0, 0, 0, 0}, p...)
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			room := fmt.Sprintf("cmd-%d", i%50)
			id, joined := 0, false
			for range rounds {
				k := 1 + rnd.IntN(5)
				if rnd.IntN(5) == 0 {
					k = 100 // over the session's 4 KiB read buffer: a read that fills it is not the last
				}
				var cmds []string
				for range k {
					op := "join"
					if joined {
						op = "leave"
					}
					joined = !joined
					id++
					cmds = append(cmds, fmt.Sprintf(`{"op":%q,"room":%q,"id":%d}`, op, room, id))
				}
				nc := c.Conn.NetConn()
				_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				switch mode := rnd.IntN(3); mode {
				case 0:
					for _, cmd := range cmds {
						if err := c.Conn.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
							errs <- err
							return
						}
					}
				default:
					var b []byte
					for _, cmd := range cmds {
						b = append(b, frame(cmd)...)
					}
					if mode == 2 {
						cut := 1 + rnd.IntN(len(b)-1)
						if _, err := nc.Write(b[:cut]); err != nil {
							errs <- err
							return
						}
						time.Sleep(time.Millisecond) // the first part is read on its own
						b = b[cut:]
					}
					if _, err := nc.Write(b); err != nil {
						errs <- err
						return
					}
				}
				for j := range k {
					want := id - k + 1 + j
					m, err := c.Next(10 * time.Second)
					if err != nil {
						errs <- fmt.Errorf("client %d: command id %d not answered: %v", i, want, err)
						return
					}
					if m.ID == nil || int(*m.ID) != want || (m.Op != "joined" && m.Op != "left") {
						errs <- fmt.Errorf("client %d: got %s id %v, want the answer to id %d", i, m.Op, m.ID, want)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := metric(t, g, "roomcast_poller_errors_total"); n != 0 {
		t.Errorf("roomcast_poller_errors_total = %v, want 0", n)
	}
}
