package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/roomcast/roomcast/pkg/protocol"
)

// MaxFetchBytes is the most a poll reads: a larger answer is an error.
const MaxFetchBytes = MaxLineBytes

// A Fetch gets one update, a JSON object, from a data source (an HTTP
// endpoint, a command). It must return when ctx ends.
type Fetch func(ctx context.Context) ([]byte, error)

// HTTPFetch GETs url with client; anything but a 200 with a body of at
// most MaxFetchBytes is an error.
func HTTPFetch(client *http.Client, url string) Fetch {
	return func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return readLimited(resp.Body)
	}
}

// ExecFetch runs command with /bin/sh -c (so that pipes and quoting work
// as in a terminal: `psql -tA -c 'select …'`) and takes what it prints.
// A command that fails (non-zero exit) is an error, with the start of its
// standard error. When ctx ends the shell is killed, and its pipes are
// abandoned a second later even if a child still holds them, so that a
// hung command never blocks the next poll.
func ExecFetch(command string) Fetch {
	return func(ctx context.Context) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
		ownGroup(cmd)
		var stdout, stderr limitedBuffer
		stdout.max, stderr.max = MaxFetchBytes+1, 512
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("command timed out: %w", ctx.Err())
		}
		if err != nil {
			if msg := bytes.TrimSpace(stderr.Bytes()); len(msg) > 0 {
				return nil, fmt.Errorf("command failed: %w: %s", err, msg)
			}
			return nil, fmt.Errorf("command failed: %w", err)
		}
		if stdout.Len() > MaxFetchBytes {
			return nil, fmt.Errorf("command printed more than %d bytes", MaxFetchBytes)
		}
		return stdout.Bytes(), nil
	}
}

func readLimited(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFetchBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFetchBytes {
		return nil, fmt.Errorf("answer is larger than %d bytes", MaxFetchBytes)
	}
	return data, nil
}

// limitedBuffer keeps the first max bytes written and counts the rest,
// so that a chatty command cannot fill memory.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Buffer.Len(); room < len(p) {
		b.over = true
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

func (b *limitedBuffer) Len() int {
	if b.over {
		return b.max
	}
	return b.Buffer.Len()
}

// PollStats counts a Poller's work.
type PollStats struct {
	Polls     uint64 // fetches started
	Published uint64 // objects published
	Failed    uint64 // fetches that failed, timed out or returned no JSON object
}

// Poller publishes, every interval, the JSON object a Fetch returns as
// an update of one room. A fetch that fails, takes longer than the
// timeout or returns anything but one JSON object publishes nothing: it
// is counted and logged, and the next poll tries again.
type Poller struct {
	p       *Publisher
	room    string
	every   time.Duration
	timeout time.Duration
	fetch   Fetch
	log     *slog.Logger

	polls, published, failed atomic.Uint64
	lastLog                  time.Time // of a failure; only Run's goroutine touches it
}

// NewPoller returns a poller of room; timeout bounds each fetch.
func NewPoller(p *Publisher, room string, every, timeout time.Duration, fetch Fetch, log *slog.Logger) (*Poller, error) {
	if err := protocol.CheckRoom(room); err != nil {
		return nil, fmt.Errorf("room %q: %w", room, err)
	}
	if every <= 0 || timeout <= 0 {
		return nil, errors.New("the poll interval and timeout must be positive")
	}
	return &Poller{p: p, room: room, every: every, timeout: timeout, fetch: fetch, log: log}, nil
}

// Stats returns the counts so far.
func (pl *Poller) Stats() PollStats {
	return PollStats{Polls: pl.polls.Load(), Published: pl.published.Load(), Failed: pl.failed.Load()}
}

// Run polls at once and then every interval until ctx ends. A poll that
// overruns the interval delays the next one rather than overlapping it.
func (pl *Poller) Run(ctx context.Context) {
	t := time.NewTicker(pl.every)
	defer t.Stop()
	for {
		if err := pl.Once(ctx); err != nil && ctx.Err() == nil {
			// At most one line a minute, so that a source that is down
			// for a day does not fill the log; the count says how many.
			if pl.lastLog.IsZero() || time.Since(pl.lastLog) >= time.Minute {
				pl.lastLog = time.Now()
				pl.log.Warn("poll failed; nothing published", "room", pl.room, "err", err, "failed_total", pl.failed.Load())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once fetches and publishes one update.
func (pl *Poller) Once(ctx context.Context) error {
	pl.polls.Add(1)
	fctx, cancel := context.WithTimeout(ctx, pl.timeout)
	data, err := pl.fetch(fctx)
	cancel()
	if err == nil {
		data = bytes.TrimSpace(data)
		if len(data) == 0 {
			err = errors.New("empty answer")
		}
	}
	if err == nil {
		err = pl.p.PublishJSON(pl.room, data)
	}
	if err != nil {
		pl.failed.Add(1)
		return err
	}
	pl.published.Add(1)
	return nil
}
