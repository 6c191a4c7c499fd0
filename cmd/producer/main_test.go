package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/config"
)

func TestMain(m *testing.M) {
	roomtest.RunAsCommand(func(args []string) int {
		return exitCode(run(context.Background(), args, os.Stdin, os.Stderr), os.Stderr)
	})
	os.Exit(m.Run())
}

// TestStdin pipes lines into `producer --stdin`: good lines are published,
// bad ones reported with their line number, and the exit status says that
// some were skipped.
func TestStdin(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	sub, err := nc.SubscribeSync("roomcast.room.orders")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	input := "{\"open\": 3}\nnot json\n\n{\"open\": 4, \"ts\": 1}\n[1]\n"
	p := roomtest.StartCommandWithInput(t, input, []string{"--stdin", "--room", "orders", "--nats-url", ns.ClientURL()}, "ROOMCAST_CONFIG=../../config.yaml")
	_ = p.Cmd.Wait()
	if code := p.Cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d, want 1 (lines skipped); output:\n%s", code, p.Output())
	}
	for _, want := range []string{"line 2:", "line 5:", "published=2", "skipped=2"} {
		if !strings.Contains(p.Output(), want) {
			t.Errorf("output does not mention %q:\n%s", want, p.Output())
		}
	}
	for _, want := range []string{`"open":3}`, `{"open":4,"ts":1}`} {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(m.Data), want) {
			t.Errorf("published %s, want …%s", m.Data, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--stdin"}, "--room"},
		{[]string{"--room", "x"}, "--stdin"},
		{[]string{"--stdin", "--room", "a.b", "--nats-url", "nats://127.0.0.1:1"}, "room"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"--rooms", "orders"}, `"orders" is not in producer.rooms`},
		{[]string{"--stdin", "--room", "x", "--rooms", "sales"}, "--rooms"},
	} {
		p := roomtest.StartCommandWithInput(t, "{}\n", tt.args, "ROOMCAST_CONFIG=../../config.yaml")
		_ = p.Cmd.Wait()
		if code := p.Cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(p.Output(), tt.want) {
			t.Errorf("%v: exit %d, output %q; want failure mentioning %q", tt.args, code, p.Output(), tt.want)
		}
	}
}

// TestRoomsFlag runs `producer --rooms b` on a config with rooms a and b:
// only b is published, the status line counts it, and --metrics-listen
// serves the count.
func TestRoomsFlag(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	sub, err := nc.SubscribeSync("roomcast.room.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	const cfg = `producer:
  rooms:
    - {room: a, interval: 20ms, metrics: [{key: x, generator: uniform, min: 1, max: 2}]}
    - {room: b, interval: 20ms, metrics: [{key: y, generator: uniform, min: 1, max: 2}]}
`
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", roomtest.FreePort(t))
	p := roomtest.StartCommand(t, []string{"--config", cfgFile, "--nats-url", ns.ClientURL(),
		"--rooms", "b", "--status-interval", "50ms", "--metrics-listen", metricsAddr})
	for range 5 {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("%v; output:\n%s", err, p.Output())
		}
		if m.Subject != "roomcast.room.b" {
			t.Fatalf("published on %s, want only roomcast.room.b", m.Subject)
		}
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(p.Output(), "producer status") {
			return fmt.Errorf("no status line yet:\n%s", p.Output())
		}
		return nil
	})
	roomtest.Eventually(t, 5*time.Second, func() error {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !regexp.MustCompile(`(?m)^roomcast_producer_published_total [1-9]`).Match(body) ||
			!strings.Contains(string(body), "roomcast_producer_errors_total 0") {
			return fmt.Errorf("metrics:\n%s", body)
		}
		return nil
	})
}

func TestSelectRooms(t *testing.T) {
	t.Parallel()
	configured := []config.ProducerRoom{{Room: "sales"}, {Room: "visitors"}}
	for _, tt := range []struct {
		list, want, err string
	}{
		{"sales", "sales", ""},
		{"visitors, sales", "visitors,sales", ""},
		{"sales,sales,", "sales", ""},
		{"orders", "", `"orders" is not in producer.rooms (configured: sales, visitors)`},
		{",", "", "no room named"},
	} {
		got, err := selectRooms(configured, tt.list)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.list, err, tt.err)
			}
			continue
		}
		var names []string
		for _, r := range got {
			names = append(names, r.Room)
		}
		if err != nil || strings.Join(names, ",") != tt.want {
			t.Errorf("%q: %v, %v; want %s", tt.list, names, err, tt.want)
		}
	}
}
