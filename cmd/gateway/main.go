// Command gateway runs a roomcast gateway: the dashboard page, the
// WebSocket endpoint and the NATS subscriptions behind them.
//
//	go run ./cmd/gateway --demo     # embedded NATS and sample producers
//	gateway --config /etc/roomcast/config.yaml
//
// It stops on SIGINT or SIGTERM: /readyz turns 503, clients are closed with
// 1012, NATS is drained, and it exits 0 within shutdown_timeout. A second
// signal exits at once.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
	"github.com/roomcast/roomcast/pkg/producer"
)

func main() {
	os.Exit(exitCode(run(context.Background(), os.Args[1:], os.Stderr), os.Stderr))
}

// exitCode reports err and returns the process status: 0 after a clean
// stop (also one asked for by a signal), 2 when the gateway could not
// start.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	if !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "gateway:", err)
	}
	return 2
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "config file (default: $ROOMCAST_CONFIG, else ./config.yaml if present)")
	demo := fs.Bool("demo", false, "also run the sample producers (a simulated shop's rooms sales and visitors) in this process, titled \"Live sales\" unless dashboard.title is set")
	fs.String("listen", "", "HTTP address, overrides listen")
	fs.String("nats-url", "", "NATS server list, overrides nats.url; empty runs an embedded server")
	fs.String("log-level", "", "debug, info, warn or error; overrides log.level")
	fs.String("log-format", "", "text or json; overrides log.format")
	healthcheck := fs.Bool("healthcheck", false, "check /healthz of the gateway listening on this configuration's port and exit 0 if it answers 200 (for container healthchecks: the image has no shell or curl)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) to this file until the gateway stops; for performance work")
	pprofListen := fs.String("pprof-listen", "", "serve Go's runtime profiles (heap, goroutine, CPU; net/http/pprof) at /debug/pprof/ on this address of their own, e.g. 127.0.0.1:6060; for memory and performance work, never on a public address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	overrides := config.FlagOverrides(fs, map[string]string{"listen": "listen", "nats-url": "nats.url", "log-level": "log.level", "log-format": "log.format"})
	cfg, err := config.Load(config.LoadOptions{File: *configFile, Overrides: overrides})
	if err != nil {
		return err
	}
	if *healthcheck {
		return checkHealth(cfg.Listen, cfg.TLS.CertFile != "")
	}
	if *demo && len(cfg.Dashboard.TitleText()) == 0 {
		cfg.Dashboard.Title = config.DemoTitle() // the demo is a sales screen
	}
	log := cfg.Log.NewLogger(stderr)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	if *pprofListen != "" {
		stopPprof, err := servePprof(*pprofListen, log)
		if err != nil {
			return fmt.Errorf("pprof-listen: %w", err)
		}
		defer stopPprof()
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	g, err := gateway.Start(cfg, gateway.Options{Log: log})
	if err != nil {
		return err
	}
	log.Info("dashboard ready", "url", dashboardURL(g.Addr(), cfg.TLS.CertFile != ""))

	var producers sync.WaitGroup
	prodCtx, stopProducers := context.WithCancel(context.Background())
	if *demo {
		nc, err := broker.Connect(broker.ConnConfig{URL: cfg.NATS.URL, Embedded: g.Embedded(), Name: "roomcast-demo-producer", Credentials: g.ProducerCredentials()}, log.With("component", "demo-producer"))
		if err != nil {
			stopProducers()
			_ = g.Shutdown(context.Background())
			return err
		}
		p, err := producer.New(nc, producer.Options{SubjectPrefix: cfg.NATS.SubjectPrefix, CatalogBucket: cfg.NATS.CatalogBucket, CatalogReplicas: cfg.History.Replicas})
		if err != nil {
			stopProducers()
			nc.Close()
			_ = g.Shutdown(context.Background())
			return err
		}
		producers.Add(1)
		go func() {
			defer producers.Done()
			defer nc.Close()
			// Five minutes of made-up past: the dashboard's charts (a
			// 5-minute window) are full as soon as it opens.
			producer.RunFrom(prodCtx, p, cfg.Producer.Rooms, cfg.Producer.AnnounceInterval, 5*time.Minute, log.With("component", "demo-producer"))
		}()
		log.Info("demo producers running", "rooms", len(cfg.Producer.Rooms))
	}

	<-ctx.Done()
	stop() // a second signal now ends the process at once
	log.Info("signal received, shutting down", "timeout", cfg.ShutdownTimeout)
	stopProducers()
	producers.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := g.Shutdown(sctx); err != nil {
		// The stop was asked for: report what did not finish in time, but
		// exit 0 like a clean stop.
		log.Warn("shutdown incomplete", "err", err)
	}
	return nil
}

// checkHealth asks the local gateway's /healthz. With TLS the certificate
// is not checked: it names the public host, not 127.0.0.1, and this only
// asks our own process whether it is alive.
func checkHealth(listen string, useTLS bool) error {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	client := http.Client{Timeout: 2 * time.Second}
	scheme := "http://"
	if useTLS {
		scheme = "https://"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // see above
	}
	resp, err := client.Get(scheme + net.JoinHostPort("127.0.0.1", port) + "/healthz")
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered %s", resp.Status)
	}
	return nil
}

func dashboardURL(addr net.Addr, useTLS bool) string {
	scheme := "http://"
	if useTLS {
		scheme = "https://"
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
		host = "localhost"
	}
	return scheme + net.JoinHostPort(host, port) + "/"
}
