package deploytest

import (
	"path/filepath"
	"testing"

	"github.com/roomcast/roomcast/pkg/config"
)

// TestConfigFiles: the config files under deploy/ load with the real
// loader (unknown keys and bad values are errors) and say what they are
// for.
func TestConfigFiles(t *testing.T) {
	t.Parallel()
	k8s, err := config.Load(config.LoadOptions{File: filepath.Join(repo, "deploy/kubernetes/config.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if k8s.NATS.URL == "" || k8s.History.Replicas != 3 || len(k8s.TrustedProxies) == 0 || len(k8s.Producer.Rooms) == 0 {
		t.Errorf("deploy/kubernetes/config.yaml: nats.url %q, history.replicas %d, trusted_proxies %v, %d producer rooms",
			k8s.NATS.URL, k8s.History.Replicas, k8s.TrustedProxies, len(k8s.Producer.Rooms))
	}
	orders, err := config.Load(config.LoadOptions{File: filepath.Join(repo, "deploy/rooms/orders.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if len(orders.Producer.Rooms) != 1 || orders.Producer.Rooms[0].Room != "orders" {
		t.Errorf("deploy/rooms/orders.yaml: rooms %+v, want just orders", orders.Producer.Rooms)
	}
}
