package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// group is a set of connections run by one worker, here or in a worker
// process.
type group interface {
	// waitReady blocks until every connection is up and joined or failed.
	waitReady(ctx context.Context) error
	reset() error
	snapshot() (Stats, error)
	stop()
}

type localGroup struct{ w *worker }

func (g localGroup) waitReady(ctx context.Context) error {
	select {
	case <-g.w.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (g localGroup) reset() error             { g.w.reset(); return nil }
func (g localGroup) snapshot() (Stats, error) { return g.w.snapshot(), nil }
func (g localGroup) stop()                    { g.w.stop() }

// Worker processes: the coordinator starts its own executable with the
// argument "worker" (and workerEnv set, which the test binary checks in
// TestMain), writes a workerStart as the first line of its stdin, then
// sends commands, one per line: "reset", "snapshot", "stop". The worker
// answers each, and reports readiness, as one workerEvent JSON line on
// stdout; its stderr is the coordinator's.
const workerEnv = "LOADGEN_WORKER"

type workerStart struct {
	Config  Config `json:"config"`
	First   int    `json:"first"`
	N       int    `json:"n"`
	Workers int    `json:"workers"`
}

type workerEvent struct {
	Event string `json:"event"` // ready, reset, stats, stopped
	Stats *Stats `json:"stats,omitempty"`
}

// runWorker is the worker process's main.
func runWorker(stdin io.Reader, stdout io.Writer) error {
	if _, err := raiseNoFile(); err != nil {
		return err
	}
	in := bufio.NewScanner(stdin)
	if !in.Scan() {
		return errors.New("worker: no start line")
	}
	var st workerStart
	if err := json.Unmarshal(in.Bytes(), &st); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	w := newWorker(st.Config, st.First, st.N)
	w.start(st.Workers)
	enc := json.NewEncoder(stdout)
	lines := make(chan string)
	go func() { // ends at EOF: the coordinator went away or sent stop
		defer close(lines)
		for in.Scan() {
			lines <- in.Text()
		}
	}()
	ready := w.readyCh
	for {
		select {
		case <-ready:
			ready = nil
			if err := enc.Encode(workerEvent{Event: "ready"}); err != nil {
				w.stop()
				return err
			}
		case line, ok := <-lines:
			var ev workerEvent
			switch {
			case !ok || line == "stop":
				w.stop()
				_ = enc.Encode(workerEvent{Event: "stopped"})
				return nil
			case line == "reset":
				w.reset()
				ev.Event = "reset"
			case line == "snapshot":
				s := w.snapshot()
				ev.Event, ev.Stats = "stats", &s
			default:
				continue
			}
			if err := enc.Encode(ev); err != nil {
				w.stop()
				return err
			}
		}
	}
}

type remoteGroup struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan workerEvent // closed when the worker's stdout ends
}

func startRemote(st workerStart) (*remoteGroup, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "worker")
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &remoteGroup{cmd: cmd, stdin: stdin, events: make(chan workerEvent, 4)}
	go func() { // ends when the worker exits
		defer close(g.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var ev workerEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				g.events <- ev
			}
		}
	}()
	b, _ := json.Marshal(st)
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		g.stop()
		return nil, err
	}
	return g, nil
}

func (g *remoteGroup) await(ctx context.Context, event string) (workerEvent, error) {
	for {
		select {
		case ev, ok := <-g.events:
			if !ok {
				return ev, fmt.Errorf("worker %d exited", g.cmd.Process.Pid)
			}
			if ev.Event == event {
				return ev, nil
			}
		case <-ctx.Done():
			return workerEvent{}, ctx.Err()
		}
	}
}

func (g *remoteGroup) command(line, event string) (workerEvent, error) {
	if _, err := io.WriteString(g.stdin, line+"\n"); err != nil {
		return workerEvent{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return g.await(ctx, event)
}

func (g *remoteGroup) waitReady(ctx context.Context) error {
	_, err := g.await(ctx, "ready")
	return err
}

func (g *remoteGroup) reset() error {
	_, err := g.command("reset", "reset")
	return err
}

func (g *remoteGroup) snapshot() (Stats, error) {
	ev, err := g.command("snapshot", "stats")
	if err != nil || ev.Stats == nil {
		return Stats{}, errors.Join(err, errors.New("no stats from worker"))
	}
	return *ev.Stats, nil
}

func (g *remoteGroup) stop() {
	_, _ = g.command("stop", "stopped")
	_ = g.stdin.Close()
	done := make(chan struct{})
	go func() { _ = g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = g.cmd.Process.Kill()
		<-done
	}
}
