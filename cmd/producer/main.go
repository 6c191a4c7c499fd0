// Command producer publishes room updates to NATS for roomcast gateways.
//
//	producer                          # the generated rooms of config.yaml
//	producer --rooms sales            # only some of them
//	producer --stdin --room orders    # one JSON object per input line
//
// While generating it logs a status line (published and failed updates)
// every --status-interval, and with --metrics-listen it serves the same
// counts as Prometheus metrics at /metrics.
//
// With nats.url empty it connects to the gateway's embedded NATS
// (nats.embedded.listen), so that `go run ./cmd/gateway` and
// `go run ./cmd/producer` work together out of the box.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/roomcast/roomcast/pkg/broker"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/producer"
	"github.com/roomcast/roomcast/pkg/protocol"
)

// errSkipped makes the exit status 1 when input lines were skipped.
var errSkipped = errors.New("some input lines were skipped")

func main() {
	os.Exit(exitCode(run(context.Background(), os.Args[1:], os.Stdin, os.Stderr), os.Stderr))
}

// exitCode reports err and returns the process status: 0 when all went
// well, 1 when input lines were skipped, 2 on any other error.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errSkipped):
		return 1
	case errors.Is(err, flag.ErrHelp):
		return 2
	default:
		fmt.Fprintln(stderr, "producer:", err)
		return 2
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) error {
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "config file (default: $ROOMCAST_CONFIG, else ./config.yaml if present)")
	stdinMode := fs.Bool("stdin", false, "publish each JSON object read from standard input, one per line, to --room")
	room := fs.String("room", "", "with --stdin: the room to publish to")
	roomList := fs.String("rooms", "", "comma-separated rooms of producer.rooms to generate (default: all of them)")
	statusInterval := fs.Duration("status-interval", time.Minute, "how often to log published and failed updates; 0 turns the status line off")
	metricsListen := fs.String("metrics-listen", "", "address to serve Prometheus metrics on at /metrics, e.g. :9090 (default: none)")
	fs.String("nats-url", "", "NATS server list, overrides nats.url")
	fs.String("log-level", "", "debug, info, warn or error; overrides log.level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *stdinMode && *room == "" {
		return errors.New("--stdin needs --room NAME")
	}
	if !*stdinMode && *room != "" {
		return errors.New("--room goes with --stdin")
	}
	if *stdinMode && *roomList != "" {
		return errors.New("--rooms selects generated rooms; with --stdin use --room")
	}
	if *statusInterval < 0 {
		return errors.New("--status-interval must not be negative")
	}
	if *stdinMode {
		if err := protocol.CheckRoom(*room); err != nil {
			return fmt.Errorf("--room %q: %w", *room, err)
		}
	}
	overrides := config.FlagOverrides(fs, map[string]string{"nats-url": "nats.url", "log-level": "log.level"})
	cfg, err := config.Load(config.LoadOptions{File: *configFile, Overrides: overrides})
	if err != nil {
		return err
	}
	log := cfg.Log.NewLogger(stderr)
	rooms := cfg.Producer.Rooms
	if *roomList != "" {
		if rooms, err = selectRooms(rooms, *roomList); err != nil {
			return err
		}
	}

	url := cfg.NATS.URL
	if url == "" {
		url = "nats://" + cfg.NATS.Embedded.Listen
	}
	nc, err := broker.Connect(broker.ConnConfig{URL: url, Name: "roomcast-producer", Credentials: cfg.NATS.Credentials()}, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	p, err := producer.New(nc, producer.Options{SubjectPrefix: cfg.NATS.SubjectPrefix, CatalogBucket: cfg.NATS.CatalogBucket, CatalogReplicas: cfg.History.Replicas})
	if err != nil {
		return err
	}

	if *stdinMode {
		// No signal handling here: Ctrl-C ends a blocked read of stdin the
		// ordinary way.
		return publishStdin(ctx, p, cfg, *room, stdin, stderr, log)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(rooms) == 0 {
		return errors.New("no rooms to generate: producer.rooms is empty (use --stdin --room NAME to pipe data)")
	}
	if *metricsListen != "" {
		stopMetrics, err := serveMetrics(*metricsListen, p, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	names := make([]string, len(rooms))
	for i, r := range rooms {
		names[i] = r.Room
	}
	log.Info("producing", "nats", url, "rooms", strings.Join(names, ","))
	var status sync.WaitGroup
	if *statusInterval > 0 {
		status.Add(1)
		go func() {
			defer status.Done()
			logStatus(ctx, p, *statusInterval, log)
		}()
	}
	producer.Run(ctx, p, rooms, cfg.Producer.AnnounceInterval, log)
	status.Wait()
	return nil
}

// selectRooms returns the rooms of configured named in list (comma
// separated), in list order; a name that is not configured is an error.
func selectRooms(configured []config.ProducerRoom, list string) ([]config.ProducerRoom, error) {
	var out []config.ProducerRoom
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		found := false
		for _, r := range configured {
			if r.Room == name {
				out, found = append(out, r), true
				break
			}
		}
		if !found {
			have := make([]string, len(configured))
			for i, r := range configured {
				have[i] = r.Room
			}
			return nil, fmt.Errorf("--rooms: room %q is not in producer.rooms (configured: %s)", name, strings.Join(have, ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--rooms: no room named")
	}
	return out, nil
}

// logStatus logs, every interval until ctx ends, how many updates were
// published and failed in the interval and in total: one line, at info,
// so that a producer that stopped working shows in its log.
func logStatus(ctx context.Context, p *producer.Publisher, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last producer.Stats
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s := p.Stats()
			log.Info("producer status", "interval", every, "published", s.Published-last.Published,
				"errors", s.Errors-last.Errors, "published_total", s.Published, "errors_total", s.Errors)
			last = s
		}
	}
}

// serveMetrics serves the publisher's counts at http://addr/metrics until
// the returned stop function is called.
func serveMetrics(addr string, p *producer.Publisher, log *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_producer_published_total", Help: "Updates the producer handed to NATS."},
			func() float64 { return float64(p.Stats().Published) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_producer_errors_total", Help: "Updates the producer could not publish."},
			func() float64 { return float64(p.Stats().Errors) }),
	)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	// Ends when stop closes the server.
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}

// publishStdin announces the room (with its config.yaml entry if it has
// one) and publishes standard input line by line.
func publishStdin(ctx context.Context, p *producer.Publisher, cfg config.Config, room string, stdin io.Reader, stderr io.Writer, log *slog.Logger) error {
	entry := catalog.Entry{Room: room, Title: catalog.Plain(room)}
	for _, r := range cfg.Producer.Rooms {
		if r.Room == room {
			entry = producer.RoomEntry(r)
		}
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := p.Announce(actx, entry); err != nil {
		log.Warn("announce failed; publishing anyway", "room", room, "err", err)
	}
	cancel()
	res, err := producer.PublishLines(stdin, room, p, stderr)
	if ferr := p.Flush(5 * time.Second); err == nil && ferr != nil {
		err = fmt.Errorf("flush: %w", ferr)
	}
	log.Info("stdin done", "room", room, "published", res.Published, "skipped", res.Skipped)
	if err != nil {
		return err
	}
	if res.Skipped > 0 {
		return errSkipped
	}
	return nil
}
