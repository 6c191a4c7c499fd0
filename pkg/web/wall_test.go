package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/catalog"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
	"github.com/roomcast/roomcast/pkg/producer"
)

// artifact returns where a test keeps a screenshot: $ROOMCAST_ARTIFACTS
// when set (a stable place for people to look at), else the test's
// artifact directory (kept with `go test -artifacts -outputdir DIR`).
func artifact(t *testing.T, name string) string {
	t.Helper()
	if dir := os.Getenv("ROOMCAST_ARTIFACTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, name)
	}
	return filepath.Join(t.ArtifactDir(), name)
}

func noConsoleErrors(t *testing.T, b *roomtest.Browser) {
	t.Helper()
	if errs := b.Errors(); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}

// card is the JS expression of a card's element.
func card(room, key string) string {
	return `document.querySelector('.panel[data-room="` + room + `"] .card[data-key="` + key + `"]')`
}

// TestPageDemoScreen: the demo's default screen, in Chinese and English,
// shows every panel kind filled with live data, and its charts full from
// the five minutes of past --demo starts with; the screenshots are the
// ones the issue asks for.
func TestPageDemoScreen(t *testing.T) {
	for _, lang := range []string{"zh", "en"} {
		t.Run(lang, func(t *testing.T) {
			_, b := startDashboardFrom(t, "?kiosk=1&lang="+lang, 5*time.Minute)
			waitDemoFilled(t, b)
			for _, chart := range []string{card("sales", "per_minute"), card("visitors", "online")} {
				b.WaitJS(t, 10*time.Second, `Number(`+chart+`.querySelector('canvas.chart').dataset.points) >= 60`)
			}
			// The feed is full (from the past --demo publishes first).
			b.WaitJS(t, 30*time.Second, `[...`+card("sales", "latest")+`.querySelectorAll('.row .vl')].every(e => e.textContent)`)
			// Its product names are not cut off, even beside amounts of
			// four or five digits (¥13,799).
			if cut := roomtest.Eval[[]string](t, b, `[...`+card("sales", "latest")+`.querySelectorAll('.row')]
				.filter(r => { const n = r.querySelector('.nm'); return n.scrollWidth > n.clientWidth; })
				.map(r => r.textContent)`); len(cut) > 0 {
				t.Errorf("names cut off in the latest orders: %q", cut)
			}
			b.Screenshot(t, artifact(t, "demo-"+lang+"-1920x1080.png"))
			noConsoleErrors(t, b)
		})
	}
}

func waitDemoFilled(t *testing.T, b *roomtest.Browser) {
	t.Helper()
	for _, js := range []string{
		card("sales", "sales") + `.dataset.target === 'gauge'`,
		`/\d/.test(` + card("sales", "sales") + `.querySelector('.value').textContent)`,
		`/\d/.test(` + card("sales", "orders") + `.querySelector('.value').textContent)`,
		`/\d/.test(` + card("sales", "orders") + `.querySelector('.cmp .cv').textContent)`,
		`Number(` + card("sales", "per_minute") + `.querySelector('canvas.chart').dataset.points) >= 3`,
		card("sales", "products") + `.querySelectorAll('.row:not([data-empty]) .nm').length === 5`,
		card("sales", "regions") + `.querySelectorAll('.row:not([data-empty]) .nm').length === 5`,
		card("sales", "channels") + `.querySelectorAll('.legend li').length === 4`,
		card("sales", "latest") + `.querySelector('.row .vl').textContent.length > 0`,
		`/\d/.test(` + card("visitors", "conversion") + `.querySelector('.value').textContent)`,
		card("visitors", "conversion") + `.dataset.tone === 'on'`,
		`Number(` + card("visitors", "online") + `.querySelector('canvas.chart').dataset.points) >= 3`,
	} {
		b.WaitJS(t, 30*time.Second, js)
	}
}

// kindsEntry is a room with every panel kind and every option, labelled
// in two languages.
const kindsEntry = `{"room":"kinds","title":{"zh":"测试大屏","en":"Kinds"},"interval_ms":200,"metrics":[
 {"key":"n","label":{"zh":"销售额","en":"Sales"},"panel":"number","format":"money","decimals":1,
  "target":{"value":20000,"label":{"zh":"目标","en":"Goal"}},
  "compare":[{"key":"n_lw","label":{"zh":"同比","en":"vs last week"}}],
  "thresholds":[{"below":5000,"color":"bad"},{"above":10000,"color":"good"}]},
 {"key":"g","label":"Gauge","panel":"number","format":"percent","target":{"key":"g_goal","style":"gauge"}},
 {"key":"t","label":{"zh":"订单","en":"Orders"},"unit":{"zh":"单","en":""},"panel":"total","format":"plain","decimals":0},
 {"key":"l","label":"Line","panel":"line","format":"compact"},
 {"key":"r","label":"Top","panel":"ranking","top":3,"format":"plain","decimals":0},
 {"key":"s","label":"Mix","panel":"share","names":{"a":{"zh":"甲","en":"Alpha"}}},
 {"key":"f","label":"Feed","panel":"list","top":4,"format":"money","decimals":0,"names":{"p":{"zh":"手机","en":"Phone"}}}]}`

// startKinds starts a gateway with the kinds room announced and updated
// every 200 ms: n grows by 100 from 12,000 (so it passes its threshold and
// its base n_lw = 10,000) and starts again after 50 updates, t (the running
// total) grows by 1, l wanders, the feed gets one item per update. Every
// 5 updates (a phase) the ranking, which comes unsorted, changes its order
// (y,z,x then x,w,z) and the share's parts swap (a 1, b 3 then a 3, b 1).
func startKinds(t *testing.T, cfg config.Config) *gateway.Gateway {
	t.Helper()
	g := roomtest.StartGateway(t, cfg)
	nc := roomtest.Connect(t, g.Embedded())
	p, err := producer.New(nc, producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := catalog.Parse("kinds", []byte(kindsEntry))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Announce(ctx, e); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			ranking := []map[string]any{{"name": "x", "value": 1}, {"name": "y", "value": 3}, {"name": "z", "value": 2}, {"name": "w", "value": 0}}
			share := map[string]any{"a": 1, "b": 3}
			if (i/5)%2 == 1 {
				ranking = []map[string]any{{"name": "x", "value": 4}, {"name": "y", "value": 1}, {"name": "z", "value": 2}, {"name": "w", "value": 3}}
				share = map[string]any{"a": 3, "b": 1}
			}
			_ = p.Publish("kinds", map[string]any{
				"n": 12000 + 100*(i%50), "n_lw": 10000,
				"g": 0.42, "g_goal": 0.5,
				"t": 1234 + i%700,
				"l": 5000 + 1000*(i%3),
				"r": ranking,
				"s": share,
				"f": []map[string]any{{"time": fmt.Sprintf("10:00:%02d", i%60), "name": "p", "detail": "east", "value": 100 + i}},
			})
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
	return g
}

// TestPagePanelKinds: every panel kind renders from the catalogue entry,
// moves with live updates, in English and in Chinese (labels, number
// formats and the colour of "up"), without console errors, and without
// layout shift: no card moves or changes size while updates come in. A
// browser set up in Chinese, on a page without ?lang, shows Chinese.
func TestPagePanelKinds(t *testing.T) {
	g := startKinds(t, roomtest.Config(t, ""))
	text := func(key, sel string) string { return card("kinds", key) + `.querySelector('` + sel + `').textContent` }
	tests := []struct {
		query, browserLang            string
		title, label, total, cmpLabel string
		money, up, cmpColor           string
		shareName, feedName           string
	}{
		{"?rooms=kinds&lang=en", "", "Kinds", "Sales", "today", "vs last week", `^¥1\d\.\dK$`, "#22c55e", "rgb(34, 197, 94)", "Alpha", "Phone"},
		{"?rooms=kinds&lang=zh", "", "测试大屏", "销售额", "今日累计", "同比", `^¥1\.\d万$`, "#ef4444", "rgb(239, 68, 68)", "甲", "手机"},
		{"?rooms=kinds&lang=zh&up=green", "", "测试大屏", "销售额", "今日累计", "同比", `^¥1\.\d万$`, "#22c55e", "rgb(34, 197, 94)", "甲", "手机"},
		// No ?lang: the browser's language.
		{"?rooms=kinds", "zh-CN", "测试大屏", "销售额", "今日累计", "同比", `^¥1\.\d万$`, "#ef4444", "rgb(239, 68, 68)", "甲", "手机"},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSpace(tt.query+" "+tt.browserLang), func(t *testing.T) {
			var opts []roomtest.BrowserOption
			if tt.browserLang != "" {
				opts = append(opts, roomtest.BrowserLang(tt.browserLang))
			}
			b := roomtest.StartBrowser(t, 1920, 1080, opts...)
			if tt.browserLang != "" {
				if l := roomtest.Eval[string](t, b, `navigator.language`); l != tt.browserLang {
					t.Fatalf("navigator.language is %q, want %q", l, tt.browserLang)
				}
			}
			b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/"+tt.query)))
			b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'live'`)
			b.WaitJS(t, 20*time.Second, `document.querySelector('.panel[data-room="kinds"] .title').textContent === `+jsString(tt.title))
			// number: label, money by language, threshold colour, target bar, comparison
			b.WaitJS(t, 20*time.Second, text("n", ".label")+` === `+jsString(tt.label))
			b.WaitJS(t, 20*time.Second, `new RegExp(`+jsString(tt.money)+`).test(`+text("n", ".value")+`)`)
			first := roomtest.Eval[string](t, b, text("n", ".value"))
			b.WaitJS(t, 20*time.Second, text("n", ".value")+` !== `+jsString(first))
			b.WaitJS(t, 20*time.Second, card("kinds", "n")+`.dataset.tone === 'on' && getComputedStyle(`+card("kinds", "n")+`.querySelector('.value')).color === 'rgb(34, 197, 94)'`)
			b.WaitJS(t, 20*time.Second, `Number(`+card("kinds", "n")+`.querySelector('.bar .fill').style.getPropertyValue('--p')) > 0.6`)
			b.WaitJS(t, 20*time.Second, text("n", ".cmp .cl")+` === `+jsString(tt.cmpLabel)+` && /^▲ \+\d+\.\d%$/.test(`+text("n", ".cmp .cv")+`)`)
			b.WaitJS(t, 20*time.Second, `getComputedStyle(`+card("kinds", "n")+`.querySelector('.cmp .cv')).color === `+jsString(tt.cmpColor))
			if up := roomtest.Eval[string](t, b, `getComputedStyle(document.documentElement).getPropertyValue('--up').trim()`); up != tt.up {
				t.Errorf("--up is %s, want %s", up, tt.up)
			}
			// number with a gauge whose goal is a field
			b.WaitJS(t, 20*time.Second, card("kinds", "g")+`.dataset.target === 'gauge' && `+card("kinds", "g")+`.querySelector('canvas.gauge').width > 0 && `+text("g", ".value")+` === '42.0%'`)
			// total: its running value moves
			b.WaitJS(t, 20*time.Second, text("t", ".tag")+` === `+jsString(tt.total)+` && /^1,\d\d\d$/.test(`+text("t", ".value")+`)`)
			total := roomtest.Eval[string](t, b, text("t", ".value"))
			b.WaitJS(t, 20*time.Second, `/^1,\d\d\d$/.test(`+text("t", ".value")+`) && `+text("t", ".value")+` !== `+jsString(total))
			// line
			b.WaitJS(t, 20*time.Second, `Number(`+card("kinds", "l")+`.querySelector('canvas.chart').dataset.points) >= 3`)
			// ranking: sorted, top 3, and re-sorted as the values change
			ranking := `[...` + card("kinds", "r") + `.querySelectorAll('.row .nm')].map(e => e.textContent).join()`
			b.WaitJS(t, 20*time.Second, ranking+` === 'y,z,x'`)
			b.WaitJS(t, 20*time.Second, ranking+` === 'x,w,z'`)
			b.WaitJS(t, 20*time.Second, ranking+` === 'y,z,x'`)
			// share: names by language, percentages, which follow the parts
			legend := `[...` + card("kinds", "s") + `.querySelectorAll('.legend li')].map(e => e.textContent).join()`
			b.WaitJS(t, 20*time.Second, legend+` === `+jsString(tt.shareName+"25.0%,b75.0%"))
			b.WaitJS(t, 20*time.Second, legend+` === `+jsString(tt.shareName+"75.0%,b25.0%"))
			// list: newest first, fills up to its 4 rows
			b.WaitJS(t, 20*time.Second, `[...`+card("kinds", "f")+`.querySelectorAll('.row .vl')].filter(e => e.textContent).length === 4`)
			b.WaitJS(t, 20*time.Second, text("f", ".row .nm")+` === `+jsString(tt.feedName))
			feed := roomtest.Eval[string](t, b, text("f", ".row .vl"))
			b.WaitJS(t, 20*time.Second, text("f", ".row .vl")+` !== `+jsString(feed))
			// Comparison bases and goals are not cards of their own.
			if n := roomtest.Eval[int](t, b, `document.querySelectorAll('.panel[data-room="kinds"] .card').length`); n != 7 {
				t.Errorf("%d cards, want 7", n)
			}
			// No layout shift: over 15 more updates (three phases: the
			// ranking and the share change, every number moves, the feed
			// scrolls) no card moves or changes size.
			rects := `JSON.stringify([...document.querySelectorAll('.panel[data-room="kinds"], .panel[data-room="kinds"] .card')].map(e => {
				const r = e.getBoundingClientRect();
				return [e.dataset.key || e.dataset.room, r.x, r.y, r.width, r.height];
			}))`
			feedValue := `Number(` + text("f", ".row .vl") + `.replace(/\D/g, ''))`
			before := roomtest.Eval[string](t, b, rects)
			from := roomtest.Eval[int](t, b, feedValue)
			b.WaitJS(t, 30*time.Second, feedValue+` >= `+fmt.Sprint(from+15))
			if after := roomtest.Eval[string](t, b, rects); after != before {
				t.Errorf("the cards moved during updates:\nbefore %s\nafter  %s", before, after)
			}
			b.Screenshot(t, artifact(t, "kinds-"+strings.NewReplacer("?", "", "&", "-", "=", "-").Replace(tt.query)+".png"))
			noConsoleErrors(t, b)
		})
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestPageNamedScreen: a screen from the config and one from the
// catalogue bucket show their title, their panels in their order and
// sizes, and only the metrics they list; the default page carries
// dashboard.title; an unknown screen says so.
func TestPageNamedScreen(t *testing.T) {
	cfg := roomtest.Config(t, "")
	cfg.Dashboard.Title = "Ops"
	cfg.Dashboard.Screens = []config.Screen{{
		Name: "ops-wall", Title: map[string]any{"zh": "运营大屏", "en": "Ops wall"}, Columns: 3,
		Panels: []catalog.ScreenPanel{{Room: "visitors", H: 2}, {Room: "sales", Metrics: []string{"orders", "sales"}, W: 2}},
	}}
	g := roomtest.StartGateway(t, cfg)
	produce(t, g.Embedded().ClientURL(), 200*time.Millisecond)
	nc := roomtest.Connect(t, g.Embedded())
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	roomtest.Eventually(t, 10*time.Second, func() error { // the gateway creates the bucket
		kv, err := js.KeyValue(catalog.DefaultBucket)
		if err != nil {
			return err
		}
		_, err = kv.Put(catalog.ScreenKeyPrefix+"kv-wall", []byte(`{"title":"From the bucket","panels":[{"room":"sales","metrics":["products"]}]}`))
		return err
	})

	b := roomtest.StartBrowser(t, 1920, 1080)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?screen=ops-wall&lang=en")))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#title').textContent === 'Ops wall' && document.title === 'Ops wall'`)
	b.WaitJS(t, 20*time.Second, `[...document.querySelectorAll('.panel')].map(p => p.dataset.room).join() === 'visitors,sales'`)
	b.WaitJS(t, 20*time.Second, `[...document.querySelectorAll('.panel[data-room="sales"] .card')].map(c => c.dataset.key).join() === 'orders,sales'`)
	b.WaitJS(t, 20*time.Second, value("sales", "orders")+` && /\d/.test(`+value("sales", "orders")+`)`)
	// Three columns: visitors takes one, sales two; two rows: visitors
	// takes both, sales one.
	b.WaitJS(t, 20*time.Second, `(() => {
		const v = document.querySelector('.panel[data-room="visitors"]').getBoundingClientRect();
		const s = document.querySelector('.panel[data-room="sales"]').getBoundingClientRect();
		return v.left < s.left && Math.abs(s.width - 2 * v.width) < 0.1 * s.width && Math.abs(s.top - v.top) < 1 &&
			Math.abs(v.height - 2 * s.height) < 0.1 * v.height;
	})()`)
	if shown := roomtest.Eval[bool](t, b, `getComputedStyle(document.querySelector('#toggles')).display !== 'none'`); shown {
		t.Error("a named screen shows the room toggles")
	}
	b.Screenshot(t, artifact(t, "screen-ops-wall.png"))

	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?screen=kv-wall&lang=en")))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#title').textContent === 'From the bucket'`)
	b.WaitJS(t, 20*time.Second, `[...document.querySelectorAll('.card')].map(c => c.dataset.key).join() === 'products'`)

	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?lang=en")))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#title').textContent === 'Ops'`)

	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?screen=nope&lang=en")))
	b.WaitJS(t, 20*time.Second, `!document.querySelector('#empty').hidden && document.querySelector('#empty').textContent.includes('nope')`)
	noConsoleErrors(t, b)
}

// TestPageStates: an unknown room says so in the middle of its panel,
// naming it; kiosk mode without rooms= shows the default screen (every
// catalogue room).
func TestPageStates(t *testing.T) {
	g, b := startDashboard(t, "?rooms=sales,nosuch&lang=en")
	msg := `document.querySelector('.panel[data-room="nosuch"] .panel-msg')`
	b.WaitJS(t, 20*time.Second, `!`+msg+`.hidden && `+msg+`.textContent.includes('“nosuch”')`)
	b.WaitJS(t, 20*time.Second, `(() => {
		const p = document.querySelector('.panel[data-room="nosuch"]').getBoundingClientRect();
		const r = document.createRange();
		r.selectNodeContents(`+msg+`);
		const m = r.getBoundingClientRect();
		const mid = (a, b) => (a + b) / 2;
		return Math.abs(mid(m.left, m.right) - mid(p.left, p.right)) < 0.1 * p.width &&
			Math.abs(mid(m.top, m.bottom) - mid(p.top, p.bottom)) < 0.15 * p.height;
	})()`)
	b.Screenshot(t, artifact(t, "unknown-room.png"))
	// A known room has no such message.
	if shown := roomtest.Eval[bool](t, b, `!document.querySelector('.panel[data-room="sales"] .panel-msg').hidden`); shown {
		t.Error("the sales panel says it is unknown")
	}
	noConsoleErrors(t, b)

	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?kiosk=1&lang=en")))
	b.WaitJS(t, 20*time.Second, `[...document.querySelectorAll('.panel')].map(p => p.dataset.room).join() === 'sales,visitors'`)
	noConsoleErrors(t, b)
}

// TestPage4K: on a 3840×2160 wall no text is smaller than 16 CSS px at
// the 1080p-equivalent scale (32 px here), and the demo screen fills.
func TestPage4K(t *testing.T) {
	cfg := roomtest.Config(t, "")
	cfg.Dashboard.Title = config.DemoTitle()
	g := roomtest.StartGateway(t, cfg)
	produce(t, g.Embedded().ClientURL(), 200*time.Millisecond)
	b := roomtest.StartBrowser(t, 3840, 2160)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?kiosk=1&lang=zh")))
	waitDemoFilled(t, b)
	small := roomtest.Eval[[]string](t, b, `(() => {
		const out = [];
		const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
		for (let n = walk.nextNode(); n; n = walk.nextNode()) {
			const e = n.parentElement;
			if (!n.data.trim() || !e || e.closest('template')) continue;
			const r = e.getBoundingClientRect();
			if (!r.width || !r.height || getComputedStyle(e).visibility === 'hidden') continue;
			const px = parseFloat(getComputedStyle(e).fontSize);
			if (px < 32) out.push(e.className + ' "' + n.data.slice(0, 20) + '" ' + px + 'px');
		}
		return out;
	})()`)
	if len(small) > 0 {
		t.Errorf("text under 32 px on a 4K screen (16 px at 1080p): %q", small)
	}
	// Canvas text (chart axes, the gauge, the donut's centre) is not in
	// the DOM: each canvas says the size of its smallest text.
	b.WaitJS(t, 20*time.Second, `[...document.querySelectorAll('.card canvas')].every(c => c.dataset.fontPx)`)
	sizes := roomtest.Eval[[]string](t, b, `[...document.querySelectorAll('.card canvas')].map(c => c.closest('.card').dataset.key + ' ' + c.className + ' ' + (c.dataset.fontPx || 'none'))`)
	t.Logf("canvas text sizes (key, canvas, px): %q", sizes)
	kinds := map[string]bool{}
	for _, s := range sizes {
		f := strings.Fields(s)
		px, err := strconv.ParseFloat(f[2], 64)
		if err != nil || px < 32 {
			t.Errorf("canvas text under 32 px on a 4K screen (16 px at 1080p): %s", s)
		}
		kinds[f[1]] = true
	}
	if !kinds["chart"] || !kinds["gauge"] || !kinds["donut"] {
		t.Errorf("the check saw canvases %q, want charts, a gauge and a donut", sizes)
	}
	// The check saw the screen's texts: the cards' labels and values.
	if n := roomtest.Eval[int](t, b, `document.querySelectorAll('.card .label, .card .value, .card .nm').length`); n < 30 {
		t.Errorf("only %d texts on the screen", n)
	}
	b.Screenshot(t, artifact(t, "demo-zh-3840x2160.png"))
	noConsoleErrors(t, b)
}

// TestPageHistoryLandsInPlace: updates that arrive in a burst with their
// producer times (the history a join asks for) are drawn where they
// belong on the chart, not all at the moment they arrived: those older
// than the window fall off, the rest fill it.
func TestPageHistoryLandsInPlace(t *testing.T) {
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	nc := roomtest.Connect(t, g.Embedded())
	p, err := producer.New(nc, producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Announce(ctx, catalog.Entry{Room: "hist", Title: catalog.Plain("History"), IntervalMS: 1000,
		Metrics: []catalog.Metric{{Key: "v", Label: catalog.Plain("Value"), Panel: catalog.PanelLine}}}); err != nil {
		t.Fatal(err)
	}
	b := roomtest.StartBrowser(t, 1920, 1080)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?rooms=hist&window=300&lang=en")))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'live' && `+card("hist", "v"))
	time.Sleep(500 * time.Millisecond) // the join has been answered
	now := time.Now()
	for i := range 30 {
		age := 400 - 10*time.Duration(i) // 400 s ago … 110 s ago, 10 s apart
		if err := p.Publish("hist", map[string]any{"v": i, "ts": now.Add(-age * time.Second).UnixMilli()}); err != nil {
			t.Fatal(err)
		}
	}
	// 400 s … 310 s ago: outside the 300 s window; 300 s … 110 s ago: 20
	// points, less the oldest as the test's seconds pass. Drawn at their
	// arrival they would all be in.
	b.WaitJS(t, 20*time.Second, `document.querySelector('.panel[data-room="hist"] .value').textContent === '29'`)
	b.WaitJS(t, 10*time.Second, `(n => n >= 18 && n <= 20)(Number(`+card("hist", "v")+`.querySelector('canvas.chart').dataset.points))`)
	noConsoleErrors(t, b)
}

// TestPageHistoryOnLoad: a freshly loaded page fills its chart at once
// from the history its join asks for (the gateway's memory or the
// stream), without waiting for new updates.
func TestPageHistoryOnLoad(t *testing.T) {
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	nc := roomtest.Connect(t, g.Embedded())
	p, err := producer.New(nc, producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Announce(ctx, catalog.Entry{Room: "loaded", Title: catalog.Plain("Loaded"), IntervalMS: 10000,
		Metrics: []catalog.Metric{{Key: "v", Label: catalog.Plain("Value"), Panel: catalog.PanelLine}}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range 24 {
		age := 240 - 10*time.Duration(i) // 240 s ago … 10 s ago
		if err := p.Publish("loaded", map[string]any{"v": i, "ts": now.Add(-age * time.Second).UnixMilli()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	b := roomtest.StartBrowser(t, 1920, 1080)
	b.Do(t, 20*time.Second, chromedp.Navigate(roomtest.URL(g, "/?rooms=loaded&window=300&lang=en")))
	// No update is published after the load: every point comes from the
	// history the join asked for.
	b.WaitJS(t, 10*time.Second, `(n => n >= 24)(Number((`+card("loaded", "v")+` || document).querySelector('canvas.chart')?.dataset.points))`)
	b.WaitJS(t, 5*time.Second, `document.querySelector('.panel[data-room="loaded"] .value').textContent === '23'`)
	noConsoleErrors(t, b)
}
