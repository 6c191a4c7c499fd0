package socketio_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
	"github.com/roomcast/roomcast/pkg/socketio"
)

// startGateway starts NATS and a gateway on it; opts may set the
// authorization hook.
func startGateway(t *testing.T, edit func(*config.Config), authorize socketio.Authorize) (*gateway.Gateway, *server.Server, config.Config) {
	t.Helper()
	ns := roomtest.StartNATS(t)
	cfg := roomtest.Config(t, ns.ClientURL())
	if edit != nil {
		edit(&cfg)
	}
	return startOn(t, cfg, authorize), ns, cfg
}

func startOn(t *testing.T, cfg config.Config, authorize socketio.Authorize) *gateway.Gateway {
	t.Helper()
	g, err := gateway.Start(cfg, gateway.Options{Log: roomtest.Logger(t), SocketIOAuthorize: authorize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	roomtest.Eventually(t, 10*time.Second, func() error {
		if ok, why := g.Ready(); !ok {
			return fmt.Errorf("%s", why)
		}
		return nil
	})
	return g
}

// publish sends {"room":<room>,"n":<i>} to each room every interval until
// the test ends.
func publish(t *testing.T, ns *server.Server, every time.Duration, rooms ...string) {
	t.Helper()
	nc := roomtest.Connect(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			for _, r := range rooms {
				_ = nc.Publish("roomcast.room."+r, fmt.Appendf(nil, `{"room":%q,"n":%d}`, r, i))
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// nodeDir returns the folder with socket.io-client installed, skipping the
// test without node or node_modules, except in CI (ROOMCAST_CI), where it
// fails: .ci/run runs npm ci there.
func nodeDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "node"))
	if err != nil {
		t.Fatal(err)
	}
	_, errNode := exec.LookPath("node")
	_, errMods := os.Stat(filepath.Join(dir, "node_modules", "socket.io-client"))
	if errNode != nil || errMods != nil {
		if os.Getenv("ROOMCAST_CI") != "" {
			t.Fatalf("node and socket.io-client are required in CI (cd %s && npm ci): %v %v", dir, errNode, errMods)
		}
		t.Skipf("node or socket.io-client missing (cd pkg/socketio/testdata/node && npm ci): %v %v", errNode, errMods)
	}
	return dir
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }
