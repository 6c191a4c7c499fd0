package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/config"
)

// sourceConfig is where a baseline server (rawserver, floor) takes its
// updates from: the same NATS subscriptions as the gateway, on an
// embedded server by default, so that its CPU includes the same NATS work.
type sourceConfig struct {
	natsURL    string
	natsListen string
	storeDir   string
	prefix     string
	live       string
	history    bool
	maxUpdate  int
}

func defaultSource() sourceConfig {
	def := config.Default()
	return sourceConfig{natsListen: "127.0.0.1:4300", prefix: def.NATS.SubjectPrefix, live: def.History.LivePrefix,
		history: def.History.Enabled, maxUpdate: def.Limits.MaxUpdateBytes}
}

func (c *sourceConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.natsURL, "nats-url", c.natsURL, "NATS to subscribe to; empty runs an embedded server, as the gateway does")
	fs.StringVar(&c.natsListen, "nats-listen", c.natsListen, "embedded NATS address, for the load tool's producer")
	fs.StringVar(&c.storeDir, "store-dir", c.storeDir, "embedded JetStream storage (default: a new temporary directory)")
	fs.StringVar(&c.prefix, "prefix", c.prefix, "subject prefix producers publish on")
	fs.StringVar(&c.live, "live-prefix", c.live, "the history stream's republish prefix")
	fs.BoolVar(&c.history, "history", c.history, "use the history stream (seq and prev), as the gateway does by default")
}

// source is a running update source; close ends it.
type source struct {
	rooms *broker.Rooms
	nc    *nats.Conn
	addr  string // NATS URL for the load tool's producer
	close func()
}

func startSource(ctx context.Context, sc sourceConfig, name string, log *slog.Logger) (*source, error) {
	var cleanups []func()
	closeAll := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	var ns *server.Server
	if sc.natsURL == "" {
		dir := sc.storeDir
		if dir == "" {
			d, err := os.MkdirTemp("", "loadgen-"+name+"-")
			if err != nil {
				return nil, err
			}
			cleanups = append(cleanups, func() { os.RemoveAll(d) })
			dir = filepath.Join(d, "jetstream")
		}
		var err error
		ns, err = broker.StartEmbedded(broker.EmbeddedConfig{Listen: sc.natsListen, StoreDir: dir, JetStream: true}, log)
		if err != nil {
			closeAll()
			return nil, err
		}
		cleanups = append(cleanups, func() { ns.Shutdown(); ns.WaitForShutdown() })
	}
	nc, err := broker.Connect(broker.ConnConfig{URL: sc.natsURL, Embedded: ns, Name: name}, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	cleanups = append(cleanups, nc.Close)
	live := ""
	if sc.history {
		def := config.Default()
		hcfg := broker.HistoryConfig{Stream: def.History.Stream, SubjectPrefix: sc.prefix, LivePrefix: sc.live,
			Depth: def.History.Depth, MaxAge: def.History.MaxAge, Replicas: def.History.Replicas}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := broker.EnsureStream(sctx, nc, hcfg, log)
		cancel()
		if err != nil {
			closeAll()
			return nil, err
		}
		live = sc.live
	}
	rooms, err := broker.NewRooms(nc, sc.prefix, live)
	if err != nil {
		closeAll()
		return nil, err
	}
	addr := sc.natsURL
	if ns != nil {
		addr = "nats://" + ns.Addr().String()
	}
	return &source{rooms: rooms, nc: nc, addr: addr, close: closeAll}, nil
}
