package roomtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is a headless Chromium tab, closed when the test ends, that
// records console errors, warnings and uncaught exceptions.
type Browser struct {
	Ctx context.Context

	mu     sync.Mutex
	errors []string
}

// chromiumPath finds the browser; ROOMCAST_CHROMIUM overrides.
func chromiumPath() string {
	if p := os.Getenv("ROOMCAST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// BrowserOption changes how StartBrowser starts Chromium.
type BrowserOption func(*browserOptions)

type browserOptions struct {
	lang string
}

// BrowserLang starts Chromium in language tag (e.g. "zh-CN"): its UI
// language and the languages it asks pages in (navigator.language and
// Accept-Language), as a browser set up in that language would.
func BrowserLang(tag string) BrowserOption {
	return func(o *browserOptions) { o.lang = tag }
}

// StartBrowser starts headless Chromium with a window of w×h. Without
// Chromium the test is skipped, except in CI (ROOMCAST_CI set), where it
// fails: .ci/run installs it, and a missing install must not hide.
func StartBrowser(t testing.TB, w, h int, opts ...BrowserOption) *Browser {
	t.Helper()
	var o browserOptions
	for _, opt := range opts {
		opt(&o)
	}
	path := chromiumPath()
	if path == "" {
		if os.Getenv("ROOMCAST_CI") != "" {
			t.Fatal("Chromium is required in CI (apt-get install chromium)")
		}
		t.Skip("Chromium not found; install the chromium package or set ROOMCAST_CHROMIUM")
	}
	flags := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(w, h),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	if o.lang != "" {
		flags = append(flags, chromedp.Flag("lang", o.lang), chromedp.Flag("accept-lang", o.lang),
			chromedp.Env("LANGUAGE="+strings.ReplaceAll(o.lang, "-", "_"), "LANG="+strings.ReplaceAll(o.lang, "-", "_")+".UTF-8"))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), flags...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first run starts the browser; it must not carry a timeout. The
	// viewport, not the window, is what the page and screenshots see.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(w), int64(h))); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	b := &Browser{Ctx: ctx}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
				b.mu.Lock()
				b.errors = append(b.errors, m.String())
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// Errors returns the console errors, warnings and exceptions seen so far
// and forgets them.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.errors
	b.errors = nil
	return e
}

// Do runs chromedp steps with a timeout.
func (b *Browser) Do(t testing.TB, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// Eval evaluates a JavaScript expression and returns its value.
func Eval[T any](t testing.TB, b *Browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// WaitJS polls a JavaScript expression until it is true.
func (b *Browser) WaitJS(t testing.TB, timeout time.Duration, expr string) {
	t.Helper()
	Eventually(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(b.Ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("not yet true: %s", expr)
		}
		return nil
	})
}

// Screenshot saves a PNG of the viewport to path.
func (b *Browser) Screenshot(t testing.TB, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
