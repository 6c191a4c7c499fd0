package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/internal/roomtest"
)

// TestMain lets the test binary serve as the worker process that the
// coordinator starts (with workerEnv set), as the real binary does.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// tiny is a smoke workload: 50 connections over 2 rooms at 10 Hz.
var tiny = []string{"--quick", "--conns", "50", "--rooms", "2", "--hz", "10", "--duration", "1s", "--warmup", "500ms", "--settle", "0s", "--timeout", "5s"}

// TestLoad runs the tiny workload against a real gateway (in this process),
// also spread over two worker processes, and against the raw server, and
// checks what the JSON line says: everything delivered, in sequence.
func TestLoad(t *testing.T) {
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	gwNATS := g.Embedded().ClientURL()

	rawAddr := "127.0.0.1:" + strconv.Itoa(roomtest.FreePort(t))
	rawNATS := "127.0.0.1:" + strconv.Itoa(roomtest.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	rawDone := make(chan error, 1)
	go func() { // the raw server; ends when ctx is cancelled
		var stderr bytes.Buffer
		err := runRawServer(ctx, []string{"--listen", rawAddr, "--nats-listen", rawNATS, "--store-dir", t.TempDir()}, &stderr)
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		rawDone <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-rawDone; err != nil {
			t.Error(err)
		}
	})
	roomtest.Eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", rawAddr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"gateway", []string{"--addr", g.Addr().String(), "--nats", gwNATS}},
		{"gateway-2-workers", []string{"--addr", g.Addr().String(), "--nats", gwNATS, "--workers", "2", "--source-ips", "2"}},
		{"raw", []string{"--raw", "--addr", rawAddr, "--nats", "nats://" + rawNATS, "--pid", strconv.Itoa(os.Getpid())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runTiny(t, tc.args...)
			if res.Established != 50 || res.Failed != 0 {
				t.Errorf("established %d, failed %d; want 50, 0", res.Established, res.Failed)
			}
			if res.Deliveries == 0 || res.Latency.Count == 0 || res.Latency.P50 <= 0 {
				t.Errorf("deliveries %d, latencies %d, p50 %v: want some", res.Deliveries, res.Latency.Count, res.Latency.P50)
			}
			if res.Gaps != 0 || res.Dups != 0 || res.NoSeq != 0 {
				t.Errorf("gaps %d, dups %d, updates without seq %d; want none", res.Gaps, res.Dups, res.NoSeq)
			}
			if len(res.Errors) != 0 || len(res.Disconnect) != 0 {
				t.Errorf("errors %v, disconnects %v; want none", res.Errors, res.Disconnect)
			}
			if tc.name == "raw" && res.Server.CPUSeconds <= 0 {
				t.Errorf("no CPU accounted for pid %d", os.Getpid())
			}
		})
	}
	waitConnGoroutines(t)
	if n := g.Hub().Rooms(); n != 0 {
		t.Errorf("gateway still has %d rooms after the runs", n)
	}
}

// waitConnGoroutines waits until the goroutines of the runs are gone: the
// load tool's, and the gateway's and raw server's per-connection ones. (A
// plain goroutine count would also see NATS server goroutines started
// lazily by the first messages.)
func waitConnGoroutines(t *testing.T) {
	t.Helper()
	ours := func() []string {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "TestLoad") || strings.Contains(g, "TestMain") || strings.Contains(g, "waitConnGoroutines") || strings.Contains(g, "runRawServer") ||
				strings.Contains(g, "(*rawServer).serve(") || strings.Contains(g, "(*rawServer).serve.func") ||
				strings.Contains(g, "(*Poller).run(") || strings.Contains(g, "(*evloop).run(") || strings.Contains(g, "(*Writer).pollOut(") ||
				strings.Contains(g, "net/http.(*Server).Serve(") {
				continue // the test itself, the raw server's accept loop, the gateway's epoll loop and write loops (a set per gateway) and accept loop
			}
			for _, p := range []string{"cmd/loadgen.", "pkg/ws.", "gorilla/websocket."} {
				if strings.Contains(g, p) {
					left = append(left, g)
					break
				}
			}
		}
		return left
	}
	deadline := time.Now().Add(10 * time.Second)
	for left := ours(); len(left) > 0; left = ours() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left by the runs:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runTiny(t *testing.T, args ...string) Result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(append(append([]string{}, tiny...), args...), strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	res, err := parseResult(stdout.String())
	if err != nil {
		t.Fatalf("%v in:\n%s", err, stdout.String())
	}
	t.Logf("%s", stdout.String())
	return res
}

func parseResult(out string) (Result, error) {
	var res Result
	for line := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(line, resultPrefix); ok {
			return res, json.Unmarshal([]byte(rest), &res)
		}
	}
	return res, errors.New("no " + strings.TrimSpace(resultPrefix) + " line")
}

// TestChurn drives join/leave loops and checks that they are counted and
// that every room's subscription is gone afterwards.
func TestChurn(t *testing.T) {
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	res := runTiny(t, "--addr", g.Addr().String(), "--nats", g.Embedded().ClientURL(), "--churn", "--rooms-per-conn", "0",
		"--rooms", "4", "--churn-rate", "10", "--conns", "20")
	if res.Ops == 0 || len(res.Errors) != 0 {
		t.Errorf("ops %d, errors %v: want ops and no errors", res.Ops, res.Errors)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Rooms(); n != 0 {
			return fmt.Errorf("%d rooms subscribed", n)
		}
		return nil
	})
}

func TestHistogram(t *testing.T) {
	for _, v := range []uint64{0, 1, 31, 32, 33, 1000, 123456, 1e9, 1e11, 1 << 62} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("index %d of %d out of range", i, v)
		}
		got := histValue(i)
		if d := float64(got) - float64(v); d > float64(v)/histSub+1 || -d > float64(v)/histSub+1 {
			t.Errorf("value %d → bucket %d → %d: more than 1/%d off", v, i, got, histSub)
		}
	}
	counts := make([]uint64, histBuckets)
	for v := uint64(1); v <= 1000; v++ {
		counts[histIndex(v*1000)]++
	}
	for q, want := range map[float64]float64{.5: 500e3, .9: 900e3, .99: 990e3} {
		if got := float64(quantile(counts, q)); got < want*0.96 || got > want*1.04 {
			t.Errorf("quantile %v = %v, want about %v", q, got, want)
		}
	}
}

func TestScanMessage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want message
	}{
		{`{"op":"update","room":"r3","seq":42,"prev":38,"data":{"ts":1700000000000,"tsn":1700000000000123456,"n":1}}`,
			message{kind: kindUpdate, room: []byte("r3"), seq: 42, prev: 38, hasSeq: true, tsNano: 1700000000000123456}},
		{`{"op":"update","room":"r1","data":{"ts":1700000000000}}`,
			message{kind: kindUpdate, room: []byte("r1"), tsNano: 1700000000000 * 1e6}},
		{`{"op":"joined","room":"r7","id":9}`, message{kind: kindJoined, room: []byte("r7"), id: 9, hasID: true}},
		{`{"op":"left","room":"r7"}`, message{kind: kindLeft, room: []byte("r7")}},
		{`{"op":"error","code":"rate_limited","message":"too many \"room\":\"x\"","room":"r2","id":4}`,
			message{kind: kindError, code: []byte("rate_limited"), room: []byte("r2"), id: 4, hasID: true}},
	} {
		got := scanMessage([]byte(tc.in))
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestPresets(t *testing.T) {
	cfg, err := parseFlags([]string{"--workload", "w2", "--conns", "123"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Workload != "W2" || cfg.Conns != 123 || cfg.Rooms != 20 || cfg.RoomsPerConn != 4 || cfg.Hz != 5 || cfg.Duration != 30*time.Second {
		t.Errorf("W2 with --conns 123: %+v", cfg)
	}
	m := cfg.members()
	for r, n := range m {
		if n != m[0] && n != m[0]-1 && n != m[0]+1 {
			t.Errorf("room %d has %d members, room 0 %d: not even", r, n, m[0])
		}
	}
	for w, stagger := range map[string]bool{"W3": true, "W3T": false, "w3t": false, "W2": false} {
		cfg, err := parseFlags([]string{"--workload", w})
		if err != nil || cfg.Stagger != stagger || cfg.Rooms != map[bool]int{true: 10, false: 20}[w != "W2"] {
			t.Errorf("%s: stagger %v, rooms %d, %v; want stagger %v", w, cfg.Stagger, cfg.Rooms, err, stagger)
		}
	}
	if cfg, _ := parseFlags([]string{"--workload", "W3", "--stagger=false"}); cfg.Stagger {
		t.Error("--stagger=false did not override W3's preset")
	}
	if _, err := parseFlags([]string{"--workload", "W9"}); err == nil {
		t.Error("unknown workload accepted")
	}
}

// TestSocketIO runs the tiny workload as Socket.IO clients, over
// WebSocket and over long-polling: joins acknowledged, updates delivered
// as update_data (without seq: the event carries the payload only).
func TestSocketIO(t *testing.T) {
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	for _, transport := range []string{"websocket", "polling"} {
		t.Run(transport, func(t *testing.T) {
			res := runTiny(t, "--addr", g.Addr().String(), "--nats", g.Embedded().ClientURL(), "--socketio", transport)
			if res.Mode != "socketio-"+transport {
				t.Errorf("mode %q", res.Mode)
			}
			if res.Established != 50 || res.Failed != 0 {
				t.Errorf("established %d, failed %d; want 50, 0", res.Established, res.Failed)
			}
			if res.Deliveries == 0 || res.Latency.Count == 0 {
				t.Errorf("deliveries %d, latencies %d: want some", res.Deliveries, res.Latency.Count)
			}
			if len(res.Errors) != 0 || len(res.Disconnect) != 0 {
				t.Errorf("errors %v, disconnects %v; want none", res.Errors, res.Disconnect)
			}
		})
	}
}
