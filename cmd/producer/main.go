// Command producer publishes room updates to NATS for roomcast gateways.
//
//	producer                          # the generated rooms of config.yaml
//	producer --stdin --room orders    # one JSON object per input line
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
	"os"
	"os/signal"
	"syscall"
	"time"

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

	url := cfg.NATS.URL
	if url == "" {
		url = "nats://" + cfg.NATS.Embedded.Listen
	}
	nc, err := broker.Connect(broker.ConnConfig{URL: url, Name: "roomcast-producer", Credentials: cfg.NATS.Credentials()}, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	p, err := producer.New(nc, producer.Options{SubjectPrefix: cfg.NATS.SubjectPrefix, CatalogBucket: cfg.NATS.CatalogBucket})
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
	if len(cfg.Producer.Rooms) == 0 {
		return errors.New("no rooms to generate: producer.rooms is empty (use --stdin --room NAME to pipe data)")
	}
	log.Info("producing", "nats", url, "rooms", len(cfg.Producer.Rooms))
	producer.Run(ctx, p, cfg.Producer.Rooms, cfg.Producer.AnnounceInterval, log)
	return nil
}

// publishStdin announces the room (with its config.yaml entry if it has
// one) and publishes standard input line by line.
func publishStdin(ctx context.Context, p *producer.Publisher, cfg config.Config, room string, stdin io.Reader, stderr io.Writer, log *slog.Logger) error {
	entry := catalog.Entry{Room: room, Title: room}
	for _, r := range cfg.Producer.Rooms {
		if r.Room == room {
			entry = r.Entry()
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
