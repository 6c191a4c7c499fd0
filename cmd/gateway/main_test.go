package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
)

func TestMain(m *testing.M) {
	roomtest.RunAsCommand(func(args []string) int {
		return exitCode(run(context.Background(), args, os.Stderr), os.Stderr)
	})
	os.Exit(m.Run())
}

// TestDemoThenSIGTERM runs the README's first command as a process: the
// demo dashboard serves live sales updates; SIGTERM closes clients with
// 1012 and the process exits 0 within shutdown_timeout.
func TestDemoThenSIGTERM(t *testing.T) {
	t.Parallel()
	port, pprofPort := roomtest.FreePort(t), roomtest.FreePort(t)
	p := roomtest.StartCommand(t, []string{"--demo", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--pprof-listen", fmt.Sprintf("127.0.0.1:%d", pprofPort)},
		"ROOMCAST_CONFIG=../../config.yaml",
		"ROOMCAST_NATS_EMBEDDED_LISTEN=127.0.0.1:0",
		"ROOMCAST_NATS_EMBEDDED_STORE_DIR="+t.TempDir(),
		"ROOMCAST_SHUTDOWN_TIMEOUT=5s",
		"ROOMCAST_DRAIN_WINDOW=1s",
	)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	roomtest.Eventually(t, 20*time.Second, func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	roomtest.Eventually(t, 10*time.Second, func() error {
		if _, body := roomtest.Get(t, base+"/api/rooms", nil); !strings.Contains(body, `"sales"`) || !strings.Contains(body, `"visitors"`) {
			return fmt.Errorf("rooms %s", body)
		}
		return nil
	})

	// --pprof-listen: the profiles on their own address, not on listen.
	if code, body := roomtest.Get(t, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", pprofPort), nil); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("pprof listener: %d %.100q", code, body)
	}
	if code, _ := roomtest.Get(t, base+"/debug/pprof/goroutine?debug=1", nil); code == 200 {
		t.Error("the public listener serves /debug/pprof/")
	}

	// The container healthcheck, against the running gateway and against
	// a port nobody listens on.
	for listen, ok := range map[string]bool{fmt.Sprintf(":%d", port): true, fmt.Sprintf(":%d", roomtest.FreePort(t)): false} {
		hc := roomtest.StartCommand(t, []string{"--healthcheck", "--listen", listen}, "ROOMCAST_CONFIG=../../config.yaml")
		err := hc.Cmd.Wait()
		if (err == nil) != ok {
			t.Errorf("healthcheck of %s: %v, want ok=%v\n%s", listen, err, ok, hc.Output())
		}
	}

	conn, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws", port), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"join","room":"sales"}`))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var frames []string
	for len(frames) < 2 { // joined, then an update within one 2 s interval
		_, f, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("reading: %v\n%s", err, p.Output())
		}
		frames = append(frames, strings.Split(string(f), "\n")...)
	}
	if !strings.Contains(frames[1], `"op":"update","room":"sales"`) || !strings.Contains(frames[1], `"sales":`) {
		t.Fatalf("frames %q", frames)
	}

	start := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, 1012) {
			t.Fatalf("client: %v, want close 1012", err)
		}
		break
	}
	if err := p.Cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.Output())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("exit took %v, shutdown_timeout is 5s", took)
	}
}

// TestStartupErrors: bad configuration stops start-up with status 2 and a
// message naming the key.
func TestStartupErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown key", []string{"--config", write("unknown.yaml", "listne: ':9000'\n")}, nil, `unknown key "listne"`},
		{"bad duration in env", nil, []string{"ROOMCAST_PING_INTERVAL=often"}, "ping_interval"},
		{"invalid address flag", []string{"--listen", "8080"}, nil, "listen"},
		{"missing config file", []string{"--config", filepath.Join(dir, "nope.yaml")}, nil, "nope.yaml"},
		{"unknown flag", []string{"--colour"}, nil, "colour"},
		{"embedded port taken", []string{"--listen", "127.0.0.1:0"}, []string{"ROOMCAST_NATS_EMBEDDED_LISTEN=" + takenAddr(t)}, "embedded NATS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := append([]string{"ROOMCAST_CONFIG=../../config.yaml", "ROOMCAST_NATS_EMBEDDED_STORE_DIR=" + t.TempDir()}, tt.env...)
			p := roomtest.StartCommand(t, tt.args, env...)
			err := p.Cmd.Wait()
			if code := p.Cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit %v (%d), want 2; output:\n%s", err, code, p.Output())
			}
			if !strings.Contains(p.Output(), tt.want) {
				t.Fatalf("output does not mention %q:\n%s", tt.want, p.Output())
			}
		})
	}
}

// takenAddr returns an address that a listener of this test holds.
func takenAddr(t *testing.T) string {
	ns := roomtest.StartNATS(t)
	return strings.TrimPrefix(ns.ClientURL(), "nats://")
}
