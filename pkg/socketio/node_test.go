package socketio_test

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/config"
)

// TestOfficialClient runs the official socket.io-client (npm) under node
// against a gateway: the default io() (polling, then the upgrade), a
// WebSocket-only client, acks, errors, and leave stopping the updates.
func TestOfficialClient(t *testing.T) {
	dir := nodeDir(t)
	// node may exit before a polling client's close reaches the gateway;
	// a short heartbeat reaps such a session quickly.
	g, ns, _ := startGateway(t, func(c *config.Config) {
		c.SocketIO.PingInterval, c.SocketIO.PingTimeout = 500*time.Millisecond, time.Second
	}, nil)
	publish(t, ns, 20*time.Millisecond, "sales", "visitors")
	for _, scenario := range []string{"default", "polling", "websocket"} {
		t.Run(scenario, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", "client-test.mjs", roomtest.URL(g, ""), scenario)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			t.Logf("node %s:\n%s", scenario, out)
			if err != nil {
				t.Fatalf("node %s: %v", scenario, err)
			}
		})
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Members("sales") + g.Hub().Members("visitors"); n != 0 {
			return errorf("%d members left in the rooms", n)
		}
		return nil
	})
}

// TestOfficialClientReconnects restarts the gateway on the same port under
// a connected client, which must reconnect and re-join on its own.
func TestOfficialClientReconnects(t *testing.T) {
	dir := nodeDir(t)
	g, ns, cfg := startGateway(t, nil, nil)
	publish(t, ns, 20*time.Millisecond, "sales")
	cfg.Listen = g.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "client-test.mjs", roomtest.URL(g, ""), "restart")
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	restarted := false
	for lines.Scan() {
		t.Log("node:", lines.Text())
		if lines.Text() == "restart-now" && !restarted {
			restarted = true
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = g.Shutdown(sctx)
			scancel()
			startOn(t, cfg, nil)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	if !restarted {
		t.Fatal("the client never asked for the restart")
	}
}
