//go:build !unix

package gateway

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockStore only opens a marker file here: without flock, two gateways
// given the same nats.embedded.store_dir are not stopped.
func lockStore(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats.embedded.store_dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "roomcast.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("nats.embedded.store_dir: %w", err)
	}
	return f, nil
}
