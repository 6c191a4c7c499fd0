package gateway_test

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/roomcast/roomcast/internal/logtest"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/internal/uring"
	"github.com/roomcast/roomcast/pkg/gateway"
	"github.com/roomcast/roomcast/pkg/ws"
)

// TestURingPath: queue.writer and io.uring decide how /ws is written, the
// log says which path runs, and a kernel that refuses io_uring (as
// container runtimes' seccomp profiles do) leaves the loop on write(2)
// and queue.writer auto on goroutines, still delivering, while io.uring
// on refuses to start.
func TestURingPath(t *testing.T) {
	t.Parallel()
	refuse := func(uint32, *uring.Params) (int, error) { return -1, syscall.EPERM }
	kernel, autoPath := ws.PathWrite, ""
	if err := uring.Available(); err == nil {
		kernel, autoPath = ws.PathURing, ws.PathURing
	} else {
		t.Logf("io_uring not allowed here, so auto runs on write(2): %v", err)
	}
	for _, tc := range []struct {
		name     string
		writer   string
		mode     string
		setup    uring.SetupFunc
		wantPath string // "": no loop writer; "fail": Start fails
		wantLog  string
	}{
		{"loop, auto", "loop", "auto", nil, kernel, ""},
		{"loop, auto, refused", "loop", "auto", refuse, ws.PathWrite, "io_uring not used"},
		{"loop, off", "loop", "off", nil, ws.PathWrite, ""},
		{"loop, on, refused", "loop", "on", refuse, "fail", ""},
		{"goroutine writer", "goroutine", "auto", nil, "", ""},
		// queue.writer auto: the loop on io_uring, else goroutines.
		{"auto, auto", "auto", "auto", nil, autoPath, ""},
		{"auto, auto, refused", "auto", "auto", refuse, "", "writer goroutine per busy connection (queue.writer auto"},
		{"auto, off", "auto", "off", nil, "", "writer goroutine per busy connection (queue.writer auto, io.uring off)"},
		{"auto, on, refused", "auto", "on", refuse, "fail", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := roomtest.StartNATS(t)
			cfg := roomtest.Config(t, ns.ClientURL())
			cfg.Queue.Writer, cfg.IO.URing = tc.writer, tc.mode
			log, logged := logtest.New()
			opts := gateway.WithURingSetup(gateway.Options{Log: log}, tc.setup)
			if tc.wantPath == "fail" {
				g, err := gateway.Start(cfg, opts)
				if err == nil {
					_ = g.Shutdown(context.Background())
					t.Fatal("started with io.uring on and io_uring refused")
				}
				if !strings.Contains(err.Error(), "io_uring") || !strings.Contains(err.Error(), "operation not permitted") {
					t.Fatalf("error %q does not say io_uring was refused", err)
				}
				return
			}
			g := roomtest.StartGatewayWith(t, cfg, opts)
			out := logged.String()
			if tc.wantPath == "" {
				if strings.Contains(out, `msg="event-loop writer"`) {
					t.Errorf("the goroutine writer logged an event-loop writer: %s", out)
				}
			} else if !strings.Contains(out, "msg=\"event-loop writer\" path="+tc.wantPath) {
				t.Errorf("log does not say path=%s:\n%s", tc.wantPath, out)
			}
			if tc.wantLog != "" && !strings.Contains(out, tc.wantLog) {
				t.Errorf("log does not say %q:\n%s", tc.wantLog, out)
			}
			// Whatever the path, updates are delivered.
			nc := roomtest.Connect(t, ns)
			c := roomtest.Dial(t, g)
			c.Join("sales")
			if err := nc.Publish(salesSubject, []byte(`{"n":1}`)); err != nil {
				t.Fatal(err)
			}
			if m := c.Expect("update"); !strings.Contains(string(m.Data), `"n":1`) {
				t.Fatalf("update %s", m.Data)
			}
			// The metrics say the same as the log.
			wantWriter, wantMetricPath := "goroutine", ws.PathWrite
			if tc.wantPath != "" {
				wantWriter, wantMetricPath = "loop", tc.wantPath
			}
			labels, sends := writerMetrics(t, g)
			if labels["writer"] != wantWriter || labels["path"] != wantMetricPath {
				t.Errorf("roomcast_writer_info %v, want writer=%s path=%s", labels, wantWriter, wantMetricPath)
			}
			if (sends > 0) != (tc.wantPath == ws.PathURing) {
				t.Errorf("roomcast_uring_sends_total %v on path %q", sends, tc.wantPath)
			}
		})
	}
}

// writerMetrics returns the labels of g's roomcast_writer_info and its
// roomcast_uring_sends_total.
func writerMetrics(t *testing.T, g *gateway.Gateway) (map[string]string, float64) {
	t.Helper()
	mfs, err := g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels, sends := map[string]string{}, 0.0
	for _, mf := range mfs {
		switch mf.GetName() {
		case "roomcast_writer_info":
			for _, lp := range mf.GetMetric()[0].GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
		case "roomcast_uring_sends_total":
			sends = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return labels, sends
}
