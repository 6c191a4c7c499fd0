package producer_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/producer"
)

// pollCase is one answer of a data source and what the poller must make
// of it.
type pollCase struct {
	name      string
	published bool
}

// checkPolls runs Once per case and checks that exactly the good answers
// were published, in order, and that the others were counted.
func checkPolls(t *testing.T, fetch producer.Fetch, cases []pollCase, want []string) {
	t.Helper()
	p, sub, _ := newPublisher(t)
	pl, err := producer.NewPoller(p, "metrics", time.Hour, 700*time.Millisecond, fetch, roomtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	var failed uint64
	for _, c := range cases {
		start := time.Now()
		err := pl.Once(context.Background())
		if (err == nil) != c.published {
			t.Errorf("%s: error %v, want published=%v", c.name, err, c.published)
		}
		if !c.published {
			failed++
		}
		if took := time.Since(start); took > 2500*time.Millisecond {
			t.Errorf("%s: the poll took %v with a 700ms timeout", c.name, took)
		}
	}
	for _, w := range want {
		m := next(t, sub)
		if !strings.HasSuffix(string(m.Data), w) {
			t.Errorf("published %s, want …%s", m.Data, w)
		}
	}
	if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("published %s from a bad answer", m.Data)
	}
	if s := pl.Stats(); s.Polls != uint64(len(cases)) || s.Failed != failed || s.Published != uint64(len(want)) {
		t.Errorf("stats %+v, want %d polls, %d failed, %d published", s, len(cases), failed, len(want))
	}
}

// TestPollHTTP: good JSON objects are published; an error status, a
// non-object, broken JSON and a slow answer publish nothing and count.
func TestPollHTTP(t *testing.T) {
	t.Parallel()
	answers := []func(w http.ResponseWriter){
		func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{"queue": 12}`)) },
		func(w http.ResponseWriter) { http.Error(w, "down", http.StatusServiceUnavailable) },
		func(w http.ResponseWriter) { _, _ = w.Write([]byte(`[1, 2]`)) },
		func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{"queue": `)) },
		func(w http.ResponseWriter) { time.Sleep(3 * time.Second); _, _ = w.Write([]byte(`{"queue": 99}`)) },
		func(w http.ResponseWriter) { _, _ = w.Write([]byte("\n{\"queue\": 13, \"ts\": 5}\n")) },
	}
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answers[int(n.Add(1))-1](w)
	}))
	t.Cleanup(srv.Close)
	checkPolls(t, producer.HTTPFetch(srv.Client(), srv.URL), []pollCase{
		{"good", true}, {"503", false}, {"array", false}, {"broken", false}, {"slow", false}, {"good again", true},
	}, []string{`"queue":12}`, `{"queue":13,"ts":5}`})
}

// TestPollExec: a command's JSON object is published; a failing command,
// bad output and a command that outlives the timeout publish nothing.
func TestPollExec(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The script answers differently on each run, from a counter file.
	script := `n=$(cat ` + dir + `/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + dir + `/n
case $n in
1) echo '{"rows": 7}' ;;
2) echo 'ERROR: relation does not exist' >&2; exit 3 ;;
3) echo 'not json' ;;
4) sleep 5; echo '{"rows": 99}' ;;
5) printf '{"rows": 8}' ;;
esac`
	checkPolls(t, producer.ExecFetch(script), []pollCase{
		{"good", true}, {"exit 3", false}, {"not json", false}, {"timeout", false}, {"good again", true},
	}, []string{`"rows":7}`, `"rows":8}`})
}

// TestPollerRun: Run polls at once and then every interval until its
// context ends.
func TestPollerRun(t *testing.T) {
	t.Parallel()
	p, sub, _ := newPublisher(t)
	pl, err := producer.NewPoller(p, "metrics", 50*time.Millisecond, time.Second,
		func(context.Context) ([]byte, error) { return []byte(`{"x":1}`), nil }, roomtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pl.Run(ctx)
	}()
	for range 3 {
		next(t, sub)
	}
	cancel()
	<-done
	if _, err := producer.NewPoller(p, "a.b", time.Second, time.Second, nil, roomtest.Logger(t)); err == nil {
		t.Error("a poller of an invalid room")
	}
}
