package web_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/roomcast/roomcast/internal/roomtest"
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
// shows every panel kind filled with live data; the screenshots are the
// ones the issue asks for.
func TestPageDemoScreen(t *testing.T) {
	for _, lang := range []string{"zh", "en"} {
		t.Run(lang, func(t *testing.T) {
			_, b := startDashboard(t, "?kiosk=1&lang="+lang)
			waitDemoFilled(t, b)
			time.Sleep(3 * time.Second) // a few more orders in the feed
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

var _ = chromedp.Navigate
