package web_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
	"github.com/roomcast/roomcast/pkg/producer"
)

// These tests drive the dashboard in headless Chromium against a real
// gateway and real NATS. They skip without Chromium, and fail without it in
// CI (see roomtest.StartBrowser). With `go test -artifacts -outputdir DIR`
// their screenshots are kept in DIR.

// produce runs the demo rooms, faster, against the NATS at url until the
// test ends.
func produce(t *testing.T, url string, every time.Duration, opts ...nats.Option) {
	t.Helper()
	produceFrom(t, url, every, 0, opts...)
}

// produceFrom is produce that first publishes backfill of made-up past,
// as --demo does.
func produceFrom(t *testing.T, url string, every, backfill time.Duration, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(-1))...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(nc, producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rooms := config.DemoRooms()
	for i := range rooms {
		rooms[i].Interval = every
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		producer.RunFrom(ctx, p, rooms, time.Minute, backfill, roomtest.Logger(t))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		nc.Close()
	})
}

// startDashboard starts a gateway with the demo rooms updating every
// 200 ms and a browser on its page.
func startDashboard(t *testing.T, query string) (*gateway.Gateway, *roomtest.Browser) {
	t.Helper()
	return startDashboardFrom(t, query, 0)
}

// startDashboardFrom is startDashboard with backfill of made-up past
// published first, as --demo does.
func startDashboardFrom(t *testing.T, query string, backfill time.Duration) (*gateway.Gateway, *roomtest.Browser) {
	t.Helper()
	cfg := roomtest.Config(t, "")
	cfg.Dashboard.Title = config.DemoTitle() // as gateway --demo does
	g := roomtest.StartGateway(t, cfg)
	produceFrom(t, g.Embedded().ClientURL(), 200*time.Millisecond, backfill)
	b := roomtest.StartBrowser(t, 1920, 1080)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/"+query)))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'live'`)
	return g, b
}

func value(room, key string) string {
	return fmt.Sprintf(`(document.querySelector('.panel[data-room="%s"] .card[data-key="%s"] .value') || {}).textContent`, room, key)
}

func TestPageShowsLiveRooms(t *testing.T) {
	_, b := startDashboard(t, "?rooms=sales,visitors")
	for _, room := range []string{"sales", "visitors"} {
		b.WaitJS(t, 20*time.Second, fmt.Sprintf(`document.querySelector('.panel[data-room="%s"] .title').textContent.length > 0`, room))
	}
	// The sales number shows and changes.
	b.WaitJS(t, 20*time.Second, value("sales", "sales")+` && /\d/.test(`+value("sales", "sales")+`)`)
	// Today's sales move by ¥100K steps; sales per minute moves every update.
	first := roomtest.Eval[string](t, b, value("sales", "per_minute"))
	b.WaitJS(t, 20*time.Second, value("sales", "per_minute")+` !== `+fmt.Sprintf("%q", first))
	// The charts have drawn points.
	b.WaitJS(t, 20*time.Second, `Number(document.querySelector('.panel[data-room="sales"] .card[data-key="per_minute"] canvas.chart').dataset.points) >= 3`)
	b.WaitJS(t, 20*time.Second, `Number(document.querySelector('.panel[data-room="visitors"] .card[data-key="online"] canvas.chart').dataset.points) >= 3`)
	b.Screenshot(t, artifact(t, "dashboard-1920x1080.png"))
	if errs := b.Errors(); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}

// TestPageToggleFollowsNATS: toggling a room on takes its NATS
// subscription on the gateway, toggling it off drops it.
func TestPageToggleFollowsNATS(t *testing.T) {
	g, b := startDashboard(t, "?rooms=sales")
	ns, live := g.Embedded(), "roomcast.live.visitors"
	b.WaitJS(t, 20*time.Second, `document.querySelector('#toggles button[data-room="visitors"]')`)
	roomtest.WaitSubscriptions(t, ns, live, 0)
	b.Do(t, 10*time.Second, chromedp.Click(chromedp.CSS(`#toggles button[data-room="visitors"]`)))
	roomtest.WaitSubscriptions(t, ns, live, 1)
	b.WaitJS(t, 20*time.Second, `document.querySelector('#toggles button[data-room="visitors"]').getAttribute('aria-pressed') === 'true'`)
	b.WaitJS(t, 20*time.Second, value("visitors", "online")+` && /\d/.test(`+value("visitors", "online")+`)`)
	b.Do(t, 10*time.Second, chromedp.Click(chromedp.CSS(`#toggles button[data-room="visitors"]`)))
	roomtest.WaitSubscriptions(t, ns, live, 0)
	b.WaitJS(t, 20*time.Second, `!document.querySelector('.panel[data-room="visitors"]') || document.querySelector('.panel[data-room="visitors"]').hidden`)
	if errs := b.Errors(); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}

// TestPageReconnects: the gateway stops, the badge says reconnecting; a
// gateway comes back on the same port and the page recovers without a
// reload.
func TestPageReconnects(t *testing.T) {
	ns := roomtest.StartNATS(t)
	produce(t, ns.ClientURL(), 200*time.Millisecond)
	cfg := roomtest.Config(t, ns.ClientURL())
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", roomtest.FreePort(t))
	g1 := roomtest.StartGateway(t, cfg)
	b := roomtest.StartBrowser(t, 1920, 1080)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g1, "/?rooms=sales")))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'live'`)
	b.WaitJS(t, 20*time.Second, value("sales", "sales")+` && /\d/.test(`+value("sales", "sales")+`)`)
	roomtest.Eval[int](t, b, `window.__marker = 1`)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'reconnecting'`)
	before := roomtest.Eval[string](t, b, value("sales", "per_minute"))

	roomtest.StartGateway(t, cfg)
	b.WaitJS(t, 30*time.Second, `document.querySelector('#conn').dataset.state === 'live'`)
	b.WaitJS(t, 20*time.Second, value("sales", "per_minute")+` !== `+fmt.Sprintf("%q", before))
	if roomtest.Eval[int](t, b, `window.__marker || 0`) != 1 {
		t.Fatal("the page was reloaded")
	}
	// While the gateway was away the browser logged failed connections;
	// only exceptions count here.
	for _, e := range b.Errors() {
		if strings.HasPrefix(e, "exception") {
			t.Fatalf("exception: %s", e)
		}
	}
}

// TestPageNewRoomAppears: a producer announces a new room with Chinese
// labels; its toggle appears without a reload and its panel shows them.
func TestPageNewRoomAppears(t *testing.T) {
	g, b := startDashboard(t, "?rooms=sales")
	nc := roomtest.Connect(t, g.Embedded())
	p, err := producer.New(nc, producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Announce(ctx, catalog.Entry{Room: "sales_cn", Title: catalog.Plain("华东销售"), IntervalMS: 200,
		Metrics: []catalog.Metric{{Key: "sales", Label: catalog.Plain("销售额"), Unit: catalog.Plain("元")}}}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				_ = p.Publish("sales_cn", map[string]any{"sales": 1000 + rand.IntN(9000)})
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	b.WaitJS(t, 20*time.Second, `document.querySelector('#toggles button[data-room="sales_cn"]')`)
	b.Do(t, 10*time.Second, chromedp.Click(chromedp.CSS(`#toggles button[data-room="sales_cn"]`)))
	b.WaitJS(t, 20*time.Second, `document.querySelector('.panel[data-room="sales_cn"] .title').textContent === '华东销售'`)
	b.WaitJS(t, 20*time.Second, `document.querySelector('.panel[data-room="sales_cn"] .card[data-key="sales"] .label').textContent === '销售额'`)
	b.WaitJS(t, 20*time.Second, `document.querySelector('.panel[data-room="sales_cn"] .card[data-key="sales"] .unit').textContent === '元'`)
	b.WaitJS(t, 20*time.Second, value("sales_cn", "sales")+` && /\d/.test(`+value("sales_cn", "sales")+`)`)
	b.Screenshot(t, artifact(t, "new-room-zh.png"))
	if errs := b.Errors(); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}

// TestPageKioskAndLanguage: ?kiosk=1 hides the room controls and ?lang=zh
// switches the UI to Chinese.
func TestPageKioskAndLanguage(t *testing.T) {
	_, b := startDashboard(t, "?rooms=sales&kiosk=1&lang=zh")
	if lang := roomtest.Eval[string](t, b, `document.documentElement.lang`); lang != "zh" {
		t.Fatalf("lang %q", lang)
	}
	b.WaitJS(t, 20*time.Second, `(() => { const t = document.querySelector('#toggles'); return !t || t.offsetParent === null || getComputedStyle(t).visibility === 'hidden' })()`)
	b.WaitJS(t, 20*time.Second, value("sales", "sales")+` && /\d/.test(`+value("sales", "sales")+`)`)
	b.Screenshot(t, artifact(t, "kiosk-zh.png"))
	if errs := b.Errors(); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}

// TestPageMemoryLongRun runs two rooms at 10 Hz for ROOMCAST_LONG_BROWSER
// (a duration, e.g. 10m) and checks that the JS heap and the DOM node
// count stay flat. Not in the default run.
func TestPageMemoryLongRun(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("ROOMCAST_LONG_BROWSER"))
	if err != nil {
		t.Skip("set ROOMCAST_LONG_BROWSER=10m to run")
	}
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	produce(t, g.Embedded().ClientURL(), 100*time.Millisecond)
	b := roomtest.StartBrowser(t, 1920, 1080)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?rooms=sales,visitors")))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'live'`)
	sample := func() (heap, nodes float64) {
		// A full window of points first, then measure.
		heap = roomtest.Eval[float64](t, b, `performance.memory ? performance.memory.usedJSHeapSize : 0`)
		nodes = roomtest.Eval[float64](t, b, `document.getElementsByTagName('*').length`)
		return heap, nodes
	}
	warm := min(d/3, 5*time.Minute+30*time.Second)
	time.Sleep(warm) // let the chart windows fill before the baseline
	h0, n0 := sample()
	time.Sleep(d - warm)
	h1, n1 := sample()
	t.Logf("after %v: JS heap %.0f → %.0f bytes, DOM nodes %.0f → %.0f", d, h0, h1, n0, n1)
	if n1 > n0 {
		t.Errorf("DOM grew from %.0f to %.0f nodes", n0, n1)
	}
	if h0 > 0 && h1 > h0*1.5 {
		t.Errorf("JS heap grew from %.0f to %.0f bytes", h0, h1)
	}
}

// TestPageWithToken: against a gateway with JWT auth, the page opened with
// ?token= lists and shows only the rooms the token grants.
func TestPageWithToken(t *testing.T) {
	cfg := roomtest.Config(t, "")
	cfg.Auth.Mode = "jwt"
	cfg.Auth.JWT.Secret = "page-test-secret-0123456789abcdef"
	g := roomtest.StartGateway(t, cfg)
	// With auth on, the embedded NATS takes only the gateway's producers.
	pc := g.ProducerCredentials()
	produce(t, g.Embedded().ClientURL(), 200*time.Millisecond, nats.UserInfo(pc.User, pc.Password), nats.CustomInboxPrefix(pc.InboxPrefix))
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "rooms": []string{"sales"},
	}).SignedString([]byte(cfg.Auth.JWT.Secret))
	if err != nil {
		t.Fatal(err)
	}
	// Both rooms are in the catalogue before the page asks for it.
	all, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"exp": time.Now().Add(time.Hour).Unix(), "rooms": []string{"*"},
	}).SignedString([]byte(cfg.Auth.JWT.Secret))
	roomtest.Eventually(t, 10*time.Second, func() error {
		_, body := roomtest.Get(t, roomtest.URL(g, "/api/rooms"), http.Header{"Authorization": {"Bearer " + all}})
		if !strings.Contains(body, `"visitors"`) || !strings.Contains(body, `"sales"`) {
			return fmt.Errorf("catalogue %s", body)
		}
		return nil
	})
	b := roomtest.StartBrowser(t, 1280, 800)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?token="+tok)))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'live'`)
	b.WaitJS(t, 20*time.Second, `document.querySelector('#toggles button[data-room="sales"]') !== null`)
	b.WaitJS(t, 20*time.Second, value("sales", "sales")+` && /\d/.test(`+value("sales", "sales")+`)`)
	if n := roomtest.Eval[int](t, b, `document.querySelectorAll('#toggles button[data-room="visitors"]').length`); n != 0 {
		t.Fatalf("the page offers the visitors room, which the token does not grant")
	}
	// Without a token the page cannot connect.
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/")))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'reconnecting'`)
}
