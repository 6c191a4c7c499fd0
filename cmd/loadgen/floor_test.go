//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roomcast/roomcast/internal/uring"
)

type floorInstance struct {
	addr, nats, mode string
	log              func() string
}

// startFloor runs `loadgen floor` in this process until the test ends.
func startFloor(t *testing.T, setup uring.SetupFunc, args ...string) floorInstance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var stderr bytes.Buffer
	w := writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return stderr.Write(b) })
	ready := make(chan floorInstance, 1)
	done := make(chan error, 1)
	go func() { // the floor; ends when cancel is called
		done <- runFloorWith(ctx, append([]string{"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--store-dir", t.TempDir()}, args...), w, setup,
			func(addr, nats, mode string) { ready <- floorInstance{addr: addr, nats: nats, mode: mode} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(20 * time.Second):
			t.Error("the floor did not stop")
		}
	})
	select {
	case f := <-ready:
		f.log = func() string { mu.Lock(); defer mu.Unlock(); return stderr.String() }
		return f
	case err := <-done:
		t.Fatalf("floor: %v: %s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("the floor did not start")
	}
	return floorInstance{}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func checkClean(t *testing.T, res Result) {
	t.Helper()
	if res.Established != res.Conns || res.Failed != 0 {
		t.Errorf("established %d of %d, failed %d", res.Established, res.Conns, res.Failed)
	}
	if res.Gaps != 0 || res.Dups != 0 || res.NoSeq != 0 {
		t.Errorf("gaps %d, dups %d, updates without seq %d; want none", res.Gaps, res.Dups, res.NoSeq)
	}
	if len(res.Errors) != 0 || len(res.Disconnect) != 0 {
		t.Errorf("errors %v, disconnects %v; want none", res.Errors, res.Disconnect)
	}
}

// TestFloor runs the tiny workload, one tick and staggered, and churn,
// against the floor in both modes with loadgen's ordinary WebSocket
// clients: every update arrives, in sequence, and the floor's CPU is
// accounted.
func TestFloor(t *testing.T) {
	for _, mode := range []string{"write", "uring"} {
		t.Run(mode, func(t *testing.T) {
			f := startFloor(t, nil, "--mode", mode)
			if mode == "uring" && f.mode != "uring" {
				if err := uring.Available(); err == nil {
					t.Fatalf("io_uring is available but the floor runs %s", f.mode)
				}
				t.Logf("io_uring unavailable here, the floor fell back to %s", f.mode)
			}
			pid := strconv.Itoa(os.Getpid())
			for _, extra := range [][]string{nil, {"--stagger"}} {
				res := runTiny(t, append([]string{"--addr", f.addr, "--nats", f.nats, "--pid", pid, "--metrics", "-"}, extra...)...)
				checkClean(t, res)
				if res.Deliveries == 0 || res.DeliveryRatio < 0.9 || res.Latency.Count == 0 {
					t.Errorf("%v: deliveries %d (ratio %.3f), latencies %d", extra, res.Deliveries, res.DeliveryRatio, res.Latency.Count)
				}
				if res.Server.CPUSeconds <= 0 {
					t.Errorf("no CPU accounted for pid %s", pid)
				}
			}
			res := runTiny(t, "--addr", f.addr, "--nats", f.nats, "--metrics", "-", "--churn", "--rooms-per-conn", "0",
				"--rooms", "4", "--churn-rate", "10", "--conns", "20")
			if res.Ops == 0 || res.Joined == 0 || res.Left == 0 || len(res.Errors) != 0 || len(res.Disconnect) != 0 {
				t.Errorf("churn: ops %d (joined %d, left %d), errors %v, disconnects %v", res.Ops, res.Joined, res.Left, res.Errors, res.Disconnect)
			}
		})
	}
}

// TestFloorFallback: when the kernel refuses io_uring (here an injected
// io_uring_setup that fails with EPERM, as seccomp or
// kernel.io_uring_disabled make it), `floor --mode uring` says so and
// serves with write(2).
func TestFloorFallback(t *testing.T) {
	refuse := func(uint32, *uring.Params) (int, error) { return -1, unix.EPERM }
	f := startFloor(t, refuse, "--mode", "uring")
	if f.mode != "write" {
		t.Fatalf("mode %q with io_uring refused; want write", f.mode)
	}
	if !strings.Contains(f.log(), "falling back to write") {
		t.Errorf("no fallback warning in:\n%s", f.log())
	}
	checkClean(t, runTiny(t, "--addr", f.addr, "--nats", f.nats, "--metrics", "-"))
}

// TestFloorSlowClient: a client that joins and never reads fills its
// socket; the floor drops its updates beyond --max-pending instead of
// blocking the loop, and the other clients of the room get everything.
func TestFloorSlowClient(t *testing.T) {
	for _, mode := range []string{"write", "uring"} {
		t.Run(mode, func(t *testing.T) {
			var f floorInstance
			t.Cleanup(func() { // after the floor has stopped (cleanups run last first) and logged its drops
				if !strings.Contains(f.log(), "dropped_updates") {
					t.Errorf("the slow client's updates were not dropped:\n%s", f.log())
				}
			})
			f = startFloor(t, nil, "--mode", mode, "--max-pending", "4096", "--loops", "1", "--sndbuf", "16384")
			cfg := defaults()
			cfg.Addr, cfg.Timeout = f.addr, 5*time.Second
			tr, err := dial(context.Background(), &cfg, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.close()
			sc, err := tr.(*wsTransport).c.NetConn().(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			_ = sc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
			if err := tr.send([]byte(`{"op":"join","room":"r0","id":1}`)); err != nil {
				t.Fatal(err)
			}
			_ = tr.setReadDeadline(time.Now().Add(5 * time.Second))
			if msg, err := tr.next(nil); err != nil || !bytes.Contains(msg, []byte(`"joined"`)) {
				t.Fatalf("join reply %q, %v", msg, err)
			}
			// Never read again: 2 s of 50 updates of 2 KB a second are
			// more than the two sockets' buffers and --max-pending.
			res := runTiny(t, "--addr", f.addr, "--nats", f.nats, "--metrics", "-", "--rooms", "1", "--conns", "5", "--hz", "50", "--payload", "2000", "--duration", "2s")
			checkClean(t, res)
			if res.DeliveryRatio < 0.9 {
				t.Errorf("the room's other clients got %.3f of their updates", res.DeliveryRatio)
			}
		})
	}
}

// TestFloorRun: --floor-run takes the floor's cost from a run's output
// and reports the ratios.
func TestFloorRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "floor.log")
	line := `LOADGEN_RESULT {"server":{"cpu_us_per_delivery":4,"cpu_us_per_op":10,"rss_per_conn_bytes":2048}}`
	if err := os.WriteFile(path, []byte("table\n"+line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseFlags([]string{"--workload", "W3", "--floor-run", path})
	if err != nil {
		t.Fatal(err)
	}
	r := Result{Deliveries: 1000, Window: 1, Server: Server{CPUSeconds: 0.012, RSSPerConn: 5120}}
	r.serverCosts(&cfg)
	if fmt.Sprintf("%.2f %.2f", r.Server.XFloor, r.Server.XFloorRSS) != "3.00 2.50" {
		t.Errorf("x_floor %v, x_floor_rss %v; want 3, 2.5", r.Server.XFloor, r.Server.XFloorRSS)
	}
	cfg, err = parseFlags([]string{"--workload", "W4", "--floor", "20"})
	if err != nil {
		t.Fatal(err)
	}
	r = Result{Ops: 1000, Window: 1, Server: Server{CPUSeconds: 0.03}}
	r.serverCosts(&cfg)
	if fmt.Sprintf("%.2f", r.Server.XFloor) != "1.50" {
		t.Errorf("W4 x_floor %v; want 1.5 (per op)", r.Server.XFloor)
	}
}
