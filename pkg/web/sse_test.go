package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/gateway"
)

// TestEventSource: Chromium's own EventSource on /sse, through a load
// balancer (a reverse proxy) in front of two gateways. It gets the join's
// history and live updates; when its gateway drains, it is told so (a
// "close" event), reconnects by itself to the other gateway with
// Last-Event-ID, and gets the updates published while it was away: every
// seq, in order, none twice.
func TestEventSource(t *testing.T) {
	ns := roomtest.StartNATS(t)
	nc := roomtest.Connect(t, ns)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.DrainWindow = 0
	a := roomtest.StartGateway(t, cfg)
	bGW := roomtest.StartGateway(t, cfg)

	var backend atomic.Pointer[gateway.Gateway]
	backend.Store(a)
	lb := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: backend.Load().Addr().String()})
		},
		FlushInterval: -1, // an event stream: pass every write on at once
	})
	t.Cleanup(lb.Close)

	pub := func(n int) uint64 {
		t.Helper()
		m, err := nc.Request("roomcast.room.sales", fmt.Appendf(nil, `{"n":%d}`, n), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ack struct{ Seq uint64 }
		_ = json.Unmarshal(m.Data, &ack)
		return ack.Seq
	}
	var seqs []uint64
	for i := range 3 {
		seqs = append(seqs, pub(i))
	}

	b := roomtest.StartBrowser(t, 800, 600)
	b.Do(t, 20*time.Second, chromedp.Navigate(lb.URL+"/healthz"))
	roomtest.Eval[bool](t, b, `(() => {
		window.got = []; window.closes = []; window.opens = 0;
		const es = new EventSource('/sse?rooms=sales&history=3');
		es.onopen = () => window.opens++;
		es.onmessage = (e) => window.got.push({id: e.lastEventId, m: JSON.parse(e.data)});
		es.addEventListener('close', (e) => window.closes.push(JSON.parse(e.data)));
		return true;
	})()`)
	b.WaitJS(t, 15*time.Second, `window.got.filter(x => x.m.op === 'update').length >= 3`)
	for i := range 3 {
		seqs = append(seqs, pub(10+i))
	}
	b.WaitJS(t, 15*time.Second, `window.got.filter(x => x.m.op === 'update').length >= 6`)

	// The gateway drains: the browser is told, and comes back (after the
	// stream's retry of 1 s) to the other one, which the balancer now
	// picks; meanwhile updates go on.
	backend.Store(bGW)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		seqs = append(seqs, pub(20+i))
	}
	b.WaitJS(t, 20*time.Second, `window.opens >= 2`)
	seqs = append(seqs, pub(30))
	want := len(seqs)
	b.WaitJS(t, 20*time.Second, fmt.Sprintf(`window.got.filter(x => x.m.op === 'update').length >= %d`, want))

	type event struct {
		ID string `json:"id"`
		M  struct {
			Op   string  `json:"op"`
			Seq  uint64  `json:"seq"`
			Prev *uint64 `json:"prev"`
		} `json:"m"`
	}
	got := roomtest.Eval[[]event](t, b, `window.got`)
	var updates []uint64
	for _, e := range got {
		if e.M.Op != "update" {
			continue
		}
		updates = append(updates, e.M.Seq)
		if want := fmt.Sprintf("sales:%d", e.M.Seq); e.ID != want {
			t.Errorf("event id %q, want %q", e.ID, want)
		}
	}
	if fmt.Sprint(updates) != fmt.Sprint(seqs) {
		t.Fatalf("updates %v\nwant    %v (every seq, in order, once)", updates, seqs)
	}
	closes := roomtest.Eval[[]map[string]any](t, b, `window.closes`)
	if len(closes) != 1 || closes[0]["code"] != float64(1012) {
		t.Fatalf("close events %v, want one with code 1012", closes)
	}
	if errs := b.Errors(); len(errs) > 0 {
		// EventSource logs nothing on a reconnect; anything here is ours.
		t.Logf("console: %v", errs)
	}
}
