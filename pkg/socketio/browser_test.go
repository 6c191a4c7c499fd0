package socketio_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/config"
)

// publishDemo publishes payloads shaped like the original dashboard's
// (sales and orders; visitors and active users) until the test ends.
func publishDemo(t *testing.T, ns *server.Server, every time.Duration) {
	t.Helper()
	nc := roomtest.Connect(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 1; ; i++ {
			_ = nc.Publish("roomcast.room.sales", fmt.Appendf(nil, `{"sales":%d,"orders":%d}`, 1000+i, i))
			_ = nc.Publish("roomcast.room.visitors", fmt.Appendf(nil, `{"visitors":%d,"active_users":%d}`, 100+i, 50+i))
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestBrowserDashboard loads a plain Socket.IO dashboard page, served from
// another origin with the official browser bundle, in headless Chromium:
// the toggles join and leave rooms and the cards follow update_data.
func TestBrowserDashboard(t *testing.T) {
	dir := nodeDir(t)
	b := roomtest.StartBrowser(t, 1000, 600)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join("testdata", "dashboard.html"))
	})
	mux.HandleFunc("GET /socket.io.min.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(dir, "node_modules", "socket.io-client", "dist", "socket.io.min.js"))
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	page := httptest.NewServer(mux)
	t.Cleanup(page.Close)

	g, ns, _ := startGateway(t, func(c *config.Config) {
		c.AllowedOrigins = []string{page.URL} // the page comes from another origin
	}, nil)
	publishDemo(t, ns, 50*time.Millisecond)

	b.Do(t, 20*time.Second, chromedp.Navigate(page.URL+"/?gw="+roomtest.URL(g, "")))
	b.WaitJS(t, 10*time.Second, `document.getElementById("status").textContent === "connected"`)

	b.Do(t, 10*time.Second, chromedp.Click(chromedp.CSS("#btn-sales")))
	b.WaitJS(t, 10*time.Second, `received.sales > 2 && document.getElementById("sales").textContent.startsWith("10")`)
	if n := roomtest.Eval[float64](t, b, `received.visitors`); n != 0 {
		t.Fatalf("%v visitors updates before joining visitors", n)
	}

	b.Do(t, 10*time.Second, chromedp.Click(chromedp.CSS("#btn-visitors")))
	b.WaitJS(t, 10*time.Second, `received.visitors > 2 && document.getElementById("active_users").textContent !== "–"`)

	// Leave sales: once the button says so, no sales update may come
	// while visitors updates go on.
	b.Do(t, 10*time.Second, chromedp.Click(chromedp.CSS("#btn-sales")))
	b.WaitJS(t, 10*time.Second, `document.getElementById("btn-sales").textContent === "Join sales"`)
	sales := roomtest.Eval[float64](t, b, `received.sales`)
	visitors := roomtest.Eval[float64](t, b, `received.visitors`)
	b.WaitJS(t, 10*time.Second, fmt.Sprintf(`received.visitors >= %v`, visitors+5))
	if n := roomtest.Eval[float64](t, b, `received.sales`); n != sales {
		t.Fatalf("sales updates after leaving: %v, then %v", sales, n)
	}
	if e := b.Errors(); len(e) > 0 {
		t.Fatalf("browser errors: %q", e)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := g.Hub().Members("sales"); n != 0 {
			return fmt.Errorf("%d members in sales", n)
		}
		return nil
	})
}
