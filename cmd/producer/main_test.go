package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
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
	// The room was announced with the first line's numeric keys.
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue("roomcast_catalog")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get("orders"); err != nil || !strings.Contains(string(e.Value()), `"metrics":[{"key":"open","label":"open"}]`) {
		t.Errorf("catalogue entry of orders: %v %v", e, err)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--stdin"}, "--room"},
		{[]string{"--room", "x"}, "--stdin, --poll or --exec"},
		{[]string{"--stdin", "--room", "a.b", "--nats-url", "nats://127.0.0.1:1"}, "room"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"--rooms", "orders"}, `"orders" is not in producer.rooms`},
		{[]string{"--stdin", "--room", "x", "--rooms", "sales"}, "--rooms"},
		{[]string{"--poll", "http://127.0.0.1:1/"}, "--room"},
		{[]string{"--poll", "http://x/", "--exec", "true", "--room", "x"}, "one of"},
		{[]string{"--exec", "true", "--room", "x", "--every", "0s"}, "--every"},
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

// TestPollAndExec runs `producer --poll` against an HTTP endpoint that
// alternates good and bad answers and `producer --exec` on a command
// that fails every other run: only the good objects are published, the
// failures are counted and logged, and a room config.yaml does not know
// is announced with the keys of its first object.
func TestPollAndExec(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			_, _ = w.Write([]byte("<html>oops</html>"))
			return
		}
		_, _ = w.Write([]byte(`{"queue": 12, "name": "a"}`))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	script := `n=$(cat ` + dir + `/n 2>/dev/null || echo 0); echo $((n+1)) > ` + dir + `/n; ` +
		`if [ $((n % 2)) = 1 ]; then echo boom >&2; exit 1; fi; echo '{"rows": 3}'`
	for _, tt := range []struct {
		name, room, want, key string
		args                  []string
	}{
		{"poll", "queue", `"queue":12,"name":"a"}`, "queue", []string{"--poll", srv.URL}},
		{"exec", "rows", `"rows":3}`, "rows", []string{"--exec", script}},
	} {
		t.Run(tt.name, func(t *testing.T) {
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
			args := append(tt.args, "--room", tt.room, "--every", "50ms", "--timeout", "2s", "--status-interval", "100ms", "--nats-url", ns.ClientURL())
			p := roomtest.StartCommand(t, args, "ROOMCAST_CONFIG=../../config.yaml")
			for range 4 {
				m, err := sub.NextMsg(5 * time.Second)
				if err != nil {
					t.Fatalf("%v; output:\n%s", err, p.Output())
				}
				if m.Subject != "roomcast.room."+tt.room || !strings.HasSuffix(string(m.Data), tt.want) {
					t.Fatalf("published %s on %s, want …%s", m.Data, m.Subject, tt.want)
				}
			}
			roomtest.Eventually(t, 5*time.Second, func() error {
				out := p.Output()
				if !strings.Contains(out, "poll failed; nothing published") || !regexp.MustCompile(`failed_total=[1-9]`).MatchString(out) {
					return fmt.Errorf("no failure logged and counted:\n%s", out)
				}
				return nil
			})
			js, err := nc.JetStream()
			if err != nil {
				t.Fatal(err)
			}
			roomtest.Eventually(t, 5*time.Second, func() error {
				kv, err := js.KeyValue("roomcast_catalog")
				if err != nil {
					return err
				}
				e, err := kv.Get(tt.room)
				if err != nil {
					return err
				}
				if !strings.Contains(string(e.Value()), `"metrics":[{"key":"`+tt.key+`"`) {
					return fmt.Errorf("entry %s", e.Value())
				}
				return nil
			})
		})
	}
}
