// Command loadgen is roomcast's load tool: it opens many WebSocket
// connections to a gateway, joins them to rooms, publishes updates to
// those rooms through NATS, and measures what arrives — deliveries per
// second, latency from publish to receipt, gaps, errors — and, given the
// gateway's pid, the gateway's CPU time per delivery and RSS per
// connection. Two baselines serve the same workloads: `loadgen floor`, the
// least a program can do (the gateway's handshake and frames, written by
// one event loop per core with write(2) or io_uring, no goroutine per
// delivery), which says how far the gateway is from the cost of the socket
// writes themselves; and `loadgen rawserver`, the same bytes with the
// gateway's batching and a writer goroutine per connection, which shares
// the gateway's Go-side costs.
//
//	loadgen --workload W2 --addr 127.0.0.1:8080 --nats nats://127.0.0.1:4222 --pid $(pgrep -n gateway)
//	loadgen floor --mode uring --listen 127.0.0.1:9200 --nats-listen 127.0.0.1:4300
//	loadgen --workload W2 --addr 127.0.0.1:9200 --nats nats://127.0.0.1:4300 --metrics - --pid <floor pid>
//	loadgen rawserver --listen 127.0.0.1:9100 --nats-listen 127.0.0.1:4300
//	loadgen --workload W2 --raw --addr 127.0.0.1:9100 --nats nats://127.0.0.1:4300 --pid <rawserver pid>
//
// See docs/performance.md for the workloads and how to read the results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(args) > 0 && args[0] == "worker":
		// The coordinator stops its workers through stdin; a signal to
		// the process group must not end them before they report.
		signal.Ignore(os.Interrupt, syscall.SIGTERM)
		err = runWorker(stdin, stdout)
	case len(args) > 0 && args[0] == "rawserver":
		err = runRawServer(ctx, args[1:], stderr)
	case len(args) > 0 && args[0] == "floor":
		err = runFloor(ctx, args[1:], stderr)
	default:
		var cfg Config
		cfg, err = parseFlags(args)
		if err == nil {
			err = runLoad(ctx, cfg, stdout, stderr)
		}
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(stderr, "loadgen:", err)
		return 1
	}
	return 0
}
