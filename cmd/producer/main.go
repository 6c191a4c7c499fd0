// Command producer publishes room updates to NATS for roomcast gateways.
//
//	producer                          # the generated rooms of config.yaml
//	producer --rooms sales            # only some of them
//	producer --stdin --room orders    # one JSON object per input line
//	producer --poll URL --every 5s --room R   # GET a JSON object, publish it
//	producer --exec CMD --every 5s --room R   # run a command that prints one
//
// --poll and --exec bound each try by --timeout; a try that fails, times
// out or gives anything but one JSON object publishes nothing, is counted
// (in the status line and, with --metrics-listen, as
// roomcast_producer_poll_failures_total) and logged at most once a minute.
// A room without an entry in config.yaml (also with --stdin) is announced
// with the numeric keys of its first object as metrics.
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
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
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
	room := fs.String("room", "", "with --stdin, --poll or --exec: the room to publish to")
	pollURL := fs.String("poll", "", "GET this URL every --every and publish the JSON object it answers to --room")
	execCmd := fs.String("exec", "", "run this command (with /bin/sh -c) every --every and publish the JSON object it prints to --room")
	every := fs.Duration("every", 5*time.Second, "with --poll or --exec: how often")
	timeout := fs.Duration("timeout", 0, "with --poll or --exec: how long one try may take (default --every, at most 30s)")
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
	modes := 0
	for _, on := range []bool{*stdinMode, *pollURL != "", *execCmd != ""} {
		if on {
			modes++
		}
	}
	if modes > 1 {
		return errors.New("use one of --stdin, --poll and --exec")
	}
	external := modes == 1
	if external && *room == "" {
		return errors.New("--stdin, --poll and --exec need --room NAME")
	}
	if !external && *room != "" {
		return errors.New("--room goes with --stdin, --poll or --exec")
	}
	if external && *roomList != "" {
		return errors.New("--rooms selects generated rooms; with --stdin, --poll or --exec use --room")
	}
	if *every <= 0 || *timeout < 0 {
		return errors.New("--every must be positive and --timeout not negative")
	}
	if *timeout == 0 {
		*timeout = min(*every, 30*time.Second)
	}
	if *statusInterval < 0 {
		return errors.New("--status-interval must not be negative")
	}
	if external {
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
	if external {
		fetch := producer.ExecFetch(*execCmd)
		if *pollURL != "" {
			fetch = producer.HTTPFetch(&http.Client{}, *pollURL)
		}
		return poll(ctx, p, cfg, *room, *every, *timeout, fetch, *statusInterval, *metricsListen, log)
	}
	if len(rooms) == 0 {
		return errors.New("no rooms to generate: producer.rooms is empty (use --stdin --room NAME to pipe data)")
	}
	if *metricsListen != "" {
		stopMetrics, err := serveMetrics(*metricsListen, p, nil, log)
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

// serveMetrics serves the publisher's counts (and the poller's, if any)
// at http://addr/metrics until the returned stop function is called.
func serveMetrics(addr string, p *producer.Publisher, pl *producer.Poller, log *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_producer_published_total", Help: "Updates the producer handed to NATS."},
			func() float64 { return float64(p.Stats().Published) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_producer_errors_total", Help: "Updates the producer could not publish."},
			func() float64 { return float64(p.Stats().Errors) }),
	)
	if pl != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_producer_poll_failures_total", Help: "Polls (--poll, --exec) that failed, timed out or gave no JSON object; nothing was published."},
			func() float64 { return float64(pl.Stats().Failed) }))
	}
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
// one, else with the numeric keys of the first line) and publishes
// standard input line by line.
func publishStdin(ctx context.Context, p *producer.Publisher, cfg config.Config, room string, stdin io.Reader, stderr io.Writer, log *slog.Logger) error {
	entry, described := roomEntry(cfg, room)
	if !described {
		// Announce the numeric keys of the first line as metrics, so that
		// the room does not appear with none; the line is still published.
		br := bufio.NewReaderSize(stdin, 64<<10)
		first, _ := br.ReadSlice('\n')
		first = bytes.Clone(first)
		for _, k := range numericKeys(bytes.TrimSpace(first)) {
			entry.Metrics = append(entry.Metrics, catalog.Metric{Key: k, Label: catalog.Plain(k)})
		}
		stdin = io.MultiReader(bytes.NewReader(first), br)
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

// roomEntry is the catalogue entry of a room fed from outside: its
// config.yaml entry if it has one, else one titled with its name.
func roomEntry(cfg config.Config, room string) (catalog.Entry, bool) {
	for _, r := range cfg.Producer.Rooms {
		if r.Room == room {
			return producer.RoomEntry(r), true
		}
	}
	return catalog.Entry{Room: room, Title: catalog.Plain(room)}, false
}

// poll publishes what fetch gets every interval until ctx ends. A room
// config.yaml does not describe is announced, once its first object
// arrives, with the object's numeric keys as metrics, so that dashboards
// have cards for it.
func poll(ctx context.Context, p *producer.Publisher, cfg config.Config, room string, every, timeout time.Duration,
	fetch producer.Fetch, statusEvery time.Duration, metricsListen string, log *slog.Logger) error {
	entry, described := roomEntry(cfg, room)
	entry.IntervalMS = every.Milliseconds()
	announce := func() {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := p.Announce(actx, entry); err != nil {
			log.Warn("announce failed; publishing anyway", "room", room, "err", err)
		}
	}
	announce()
	learn := fetch
	if !described {
		// Only Run's goroutine calls fetch, so entry needs no lock.
		learn = func(ctx context.Context) ([]byte, error) {
			data, err := fetch(ctx)
			if err == nil && len(entry.Metrics) == 0 {
				if keys := numericKeys(data); len(keys) > 0 {
					for _, k := range keys {
						entry.Metrics = append(entry.Metrics, catalog.Metric{Key: k, Label: catalog.Plain(k)})
					}
					announce()
				}
			}
			return data, err
		}
	}
	pl, err := producer.NewPoller(p, room, every, timeout, learn, log)
	if err != nil {
		return err
	}
	if metricsListen != "" {
		stopMetrics, err := serveMetrics(metricsListen, p, pl, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	var status sync.WaitGroup
	if statusEvery > 0 {
		status.Add(1)
		go func() {
			defer status.Done()
			logPollStatus(ctx, pl, statusEvery, log)
		}()
	}
	log.Info("polling", "room", room, "every", every, "timeout", timeout)
	pl.Run(ctx)
	status.Wait()
	return nil
}

// numericKeys returns the sorted keys of a JSON object whose values are
// numbers (not ts), or nothing if data is not an object.
func numericKeys(data []byte) []string {
	var obj map[string]any
	if json.Unmarshal(data, &obj) != nil {
		return nil
	}
	var keys []string
	for k, v := range obj {
		if _, ok := v.(float64); ok && k != "ts" && len(keys) < catalog.MaxMetrics && len(k) <= catalog.MaxTextLen {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// logPollStatus logs the poller's counts every interval until ctx ends.
func logPollStatus(ctx context.Context, pl *producer.Poller, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s := pl.Stats()
			log.Info("producer status", "polls_total", s.Polls, "published_total", s.Published, "failed_total", s.Failed)
		}
	}
}
