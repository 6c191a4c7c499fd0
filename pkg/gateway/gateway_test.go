package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roomcast/roomcast/internal/roomtest"
	"github.com/roomcast/roomcast/pkg/config"
	"github.com/roomcast/roomcast/pkg/gateway"
)

// Producers publish on salesSubject; with history on (the default) the
// stream republishes on salesLive, which is what gateways subscribe to.
const (
	salesSubject = "roomcast.room.sales"
	salesLive    = "roomcast.live.sales"
)

// metric reads a metric of g by name (and label value, for vectors).
func metric(t testing.TB, g *gateway.Gateway, name string) float64 {
	t.Helper()
	mfs, err := g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			}
		}
	}
	return total
}

func TestUpdateReachesClientsOnTwoGateways(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	g1 := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	g2 := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	c1, c2 := roomtest.Dial(t, g1), roomtest.Dial(t, g2)
	c1.Join("sales")
	c2.Join("sales")
	roomtest.WaitSubscriptions(t, ns, salesLive, 2)

	nc := roomtest.Connect(t, ns)
	if err := nc.Publish(salesSubject, []byte(`{ "ts": 1700000000000, "sales": 4200 }`)); err != nil {
		t.Fatal(err)
	}
	for i, c := range []*roomtest.Client{c1, c2} {
		m := c.Expect("update")
		if m.Room != "sales" || string(m.Data) != `{"ts":1700000000000,"sales":4200}` {
			t.Fatalf("client %d: %+v data %s", i, m, m.Data)
		}
	}
}

// TestSubscriptionFollowsInterest checks on the NATS server itself that a
// room's subscription exists exactly while the gateway has local clients
// in it, however the last client goes.
func TestSubscriptionFollowsInterest(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	g := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	tests := []struct {
		name string
		end  func(c *roomtest.Client)
	}{
		{"leave", func(c *roomtest.Client) {
			c.Send(`{"op":"leave","room":"sales","id":9}`)
			if m := c.Expect("left"); m.ID == nil || *m.ID != 9 {
				t.Fatalf("left reply %+v", m)
			}
		}},
		{"close handshake", func(c *roomtest.Client) {
			_ = c.Conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			c.Conn.Close()
		}},
		{"TCP close", func(c *roomtest.Client) { c.Conn.NetConn().Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roomtest.WaitSubscriptions(t, ns, salesLive, 0)
			a, b := roomtest.Dial(t, g), roomtest.Dial(t, g)
			a.Join("sales")
			roomtest.WaitSubscriptions(t, ns, salesLive, 1)
			b.Join("sales")
			b.Join("sales") // joining twice takes nothing more
			if n := roomtest.Subscriptions(ns, salesLive); n != 1 {
				t.Fatalf("%d subscriptions with two clients, want 1", n)
			}
			tt.end(a)
			roomtest.Eventually(t, 5*time.Second, func() error {
				if n := g.Hub().Members("sales"); n != 1 {
					return fmt.Errorf("%d members", n)
				}
				return nil
			})
			if n := roomtest.Subscriptions(ns, salesLive); n != 1 {
				t.Fatalf("%d subscriptions after first client went, want 1", n)
			}
			tt.end(b)
			roomtest.WaitSubscriptions(t, ns, salesLive, 0)
		})
	}
}

// TestConcurrentChurnLeavesNothing runs hundreds of clients that join,
// leave and disconnect concurrently over a few rooms, then checks that the
// NATS server holds no room subscription and that the gateway's goroutines
// are back to where they were. Not parallel: it counts goroutines.
func TestConcurrentChurnLeavesNothing(t *testing.T) {
	ns := roomtest.StartNATS(t)
	g := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	nc := roomtest.Connect(t, ns)
	baseline := roomtest.Goroutines()

	const clients, rooms, rounds = 300, 5, 8
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Add(1)
	go func() { // keep updates flowing so fan-out races with churn
		defer pub.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				_ = nc.Publish(fmt.Sprintf("roomcast.room.r%d", i%rooms), []byte(`{"v":1}`))
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- churn(g, i, rooms, rounds)
		}()
	}
	wg.Wait()
	close(stop)
	pub.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	roomtest.Eventually(t, 10*time.Second, func() error {
		if n := metric(t, g, "roomcast_connections"); n != 0 {
			return fmt.Errorf("%v connections open", n)
		}
		return nil
	})
	if n := g.Hub().Rooms(); n != 0 {
		t.Fatalf("hub still has %d rooms", n)
	}
	// The round trip makes the server process every UNSUB sent before it.
	if err := g.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
	if n := roomtest.SubscriptionsUnder(ns, "roomcast.live."); n != 0 {
		t.Fatalf("%d room subscriptions left on the NATS server", n)
	}
	roomtest.WaitGoroutines(t, baseline)
}

// churn is one client's life: join and leave random rooms without waiting
// for replies, then go away in one of three ways.
func churn(g *gateway.Gateway, i, rooms, rounds int) error {
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/ws", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	go func() { // read (and so answer pings) until the connection ends
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for r := range rounds {
		room := fmt.Sprintf("r%d", (i+r)%rooms)
		op := "join"
		if (i+r)%3 == 0 {
			op = "leave"
		}
		if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"op":"`+op+`","room":"`+room+`"}`)); err != nil {
			return err
		}
	}
	switch i % 3 {
	case 0: // leave everything, then close politely
		for r := range rooms {
			_ = conn.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"op":"leave","room":"r%d"}`, r)))
		}
		return conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	case 1:
		return conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""))
	default: // vanish
		return conn.NetConn().Close()
	}
}

func TestAPIRoomsFollowsAnnouncements(t *testing.T) {
	t.Parallel()
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	nc := roomtest.Connect(t, g.Embedded())
	entry := `{"room":"sales_cn","title":"销售","metrics":[{"key":"sales","label":"销售额","unit":"元"}]}`
	// A plain request to the bucket's subject is what `nats kv put` does;
	// retry until the gateway has created the bucket.
	roomtest.Eventually(t, 5*time.Second, func() error {
		_, err := nc.Request("$KV.roomcast_catalog.sales_cn", []byte(entry), time.Second)
		return err
	})
	var etag string
	roomtest.Eventually(t, 5*time.Second, func() error {
		resp, err := http.Get(roomtest.URL(g, "/api/rooms"))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Rooms []struct {
				Room, Title string
				Metrics     []struct{ Key, Label, Unit string }
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err
		}
		if len(body.Rooms) != 1 || body.Rooms[0].Title != "销售" || body.Rooms[0].Metrics[0].Unit != "元" {
			return fmt.Errorf("rooms %+v", body.Rooms)
		}
		etag = resp.Header.Get("ETag")
		return nil
	})
	if code, _ := roomtest.Get(t, roomtest.URL(g, "/api/rooms"), http.Header{"If-None-Match": {etag}}); code != http.StatusNotModified {
		t.Fatalf("unchanged catalogue with its ETag: %d, want 304", code)
	}
	// A broken announcement is ignored and changes nothing.
	if _, err := nc.Request("$KV.roomcast_catalog.bad", []byte(`{"title":5}`), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("$KV.roomcast_catalog.gone", []byte(`{"title":"Gone"}`), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		_, body := roomtest.Get(t, roomtest.URL(g, "/api/rooms"), nil)
		if !strings.Contains(body, `"gone"`) || strings.Contains(body, `"bad"`) {
			return fmt.Errorf("body %s", body)
		}
		return nil
	})
}

func TestHTTPEndpoints(t *testing.T) {
	t.Parallel()
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	tests := []struct {
		method, path string
		header       http.Header
		status       int
		contains     string
	}{
		{"GET", "/", nil, 200, "roomcast.js"},
		{"GET", "/roomcast.js", nil, 200, "Roomcast"},
		{"GET", "/app.js", nil, 200, "Roomcast.Client"},
		{"GET", "/style.css", nil, 200, "{"},
		{"GET", "/healthz", nil, 200, "ok"},
		{"GET", "/readyz", nil, 200, "ok"},
		{"GET", "/api/rooms", nil, 200, `"rooms"`},
		{"GET", "/metrics", nil, 200, "roomcast_connections"},
		{"POST", "/api/rooms", nil, 405, ""},
		{"DELETE", "/ws", nil, 405, ""},
		{"GET", "/nope", nil, 404, ""},
		{"GET", "/ws", nil, 400, "websocket"},
		{"GET", "/ws", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Origin": {"https://evil.example"}}, 403, "origin"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, roomtest.URL(g, tt.path), nil)
		for k, v := range tt.header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(strings.ToLower(string(b)), strings.ToLower(tt.contains)) {
			t.Errorf("%s %s: %d %.200q, want %d containing %q", tt.method, tt.path, resp.StatusCode, b, tt.status, tt.contains)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s %s: security headers missing: %v", tt.method, tt.path, resp.Header)
		}
	}
}

// TestStaticETag: the page's files carry an ETag, and a revalidation with
// it gets 304.
func TestStaticETag(t *testing.T) {
	t.Parallel()
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	for _, path := range []string{"/", "/app.js", "/roomcast.js"} {
		resp, err := http.Get(roomtest.URL(g, path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		etag := resp.Header.Get("ETag")
		if resp.StatusCode != 200 || etag == "" {
			t.Fatalf("%s: %d, ETag %q", path, resp.StatusCode, etag)
		}
		if code, _ := roomtest.Get(t, roomtest.URL(g, path), http.Header{"If-None-Match": {etag}}); code != http.StatusNotModified {
			t.Fatalf("%s revalidated: %d, want 304", path, code)
		}
	}
}

func TestAllowedOrigins(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.AllowedOrigins = []string{"https://dash.example.com"}
	g := roomtest.StartGateway(t, cfg)
	for origin, ok := range map[string]bool{
		"https://dash.example.com": true, "https://DASH.example.com": true,
		"https://evil.example.com": false, "http://dash.example.com": false, "": true,
		"http://" + g.Addr().String(): true, // its own page still works
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		conn, resp, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/ws", h)
		if ok != (err == nil) {
			t.Errorf("origin %q: err %v, want allowed=%v", origin, err, ok)
		}
		if err == nil {
			conn.Close()
		} else if resp != nil && resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: status %d, want 403", origin, resp.StatusCode)
		}
	}
}

func TestShutdownClosesClientsWith1012(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	g := roomtest.StartGateway(t, cfg)
	c := roomtest.Dial(t, g)
	c.Join("sales")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		done <- g.Shutdown(ctx)
	}()
	if code := c.ExpectClose(5 * time.Second); code != 1012 {
		t.Fatalf("close code %d, want 1012", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(cfg.ShutdownTimeout):
		t.Fatal("shutdown did not finish within shutdown_timeout")
	}
	if ok, why := g.Ready(); ok || why != "shutting down" {
		t.Fatalf("ready after shutdown: %v %s", ok, why)
	}
	if _, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/ws", nil); err == nil {
		t.Fatal("a new connection was accepted after shutdown")
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
}

// TestAPIRoomsETagAgreesAcrossReplicas: the ETag depends only on the
// catalogue, so two replicas give the same one for the same catalogue.
func TestAPIRoomsETagAgreesAcrossReplicas(t *testing.T) {
	t.Parallel()
	ns := roomtest.StartNATS(t)
	g1 := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	g2 := roomtest.StartGateway(t, roomtest.Config(t, ns.ClientURL()))
	nc := roomtest.Connect(t, ns)
	etag := func(g *gateway.Gateway) (string, string) {
		resp, err := http.Get(roomtest.URL(g, "/api/rooms"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Header.Get("ETag"), string(b)
	}
	empty, _ := etag(g1)
	if e2, _ := etag(g2); e2 != empty {
		t.Fatalf("empty catalogue: etags %s and %s", empty, e2)
	}
	// One replica may have read the entry earlier than the other, so the
	// first announcement happens before either replica had it.
	if _, err := nc.Request("$KV.roomcast_catalog.sales", []byte(`{"title":"Sales","metrics":[{"key":"sales"}]}`), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	roomtest.Eventually(t, 5*time.Second, func() error {
		e1, b1 := etag(g1)
		e2, b2 := etag(g2)
		if !strings.Contains(b1, `"sales"`) || !strings.Contains(b2, `"sales"`) {
			return fmt.Errorf("not listed yet")
		}
		if e1 == empty || e1 != e2 {
			return fmt.Errorf("etags %s and %s for the same catalogue", e1, e2)
		}
		return nil
	})
}

// TestRateLimitedReplyCarriesID: a command refused by the rate limit is
// answered with its id and room, so the client knows which to retry.
func TestRateLimitedReplyCarriesID(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.Limits.CommandBurst = 2
	cfg.Limits.CommandsPerSecond = 0.001
	g := roomtest.StartGateway(t, cfg)
	c := roomtest.Dial(t, g)
	for id := 1; id <= 3; id++ {
		c.Send(fmt.Sprintf(`{"op":"join","room":"r%d","id":%d}`, id, id))
	}
	c.Expect("joined")
	c.Expect("joined")
	m := c.Expect("error")
	if m.Code != "rate_limited" || m.ID == nil || *m.ID != 3 || m.Room != "r3" {
		t.Fatalf("reply %+v", m)
	}
}

// TestMetricsScrape scrapes /metrics over HTTP before and after traffic:
// the series are there, named roomcast_…, and they move.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	nc := roomtest.Connect(t, g.Embedded())
	scrape := func() map[string]float64 {
		_, body := roomtest.Get(t, roomtest.URL(g, "/metrics"), nil)
		out := map[string]float64{}
		for _, line := range strings.Split(body, "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, val, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			if !strings.HasPrefix(name, "roomcast_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
				t.Errorf("series not named roomcast_… (nor go_… or process_…, the standard collectors): %s", name)
			}
			if i := strings.IndexByte(name, '{'); i >= 0 && !strings.Contains(name, "_bucket{") {
				name = name[:i] // sum a vector's series
			}
			var v float64
			fmt.Sscan(val, &v)
			out[name] += v
		}
		return out
	}
	before := scrape()
	c := roomtest.Dial(t, g)
	c.Join("sales")
	c.Send(`{"op":"join","room":"a.b"}`)
	c.Expect("error")
	roomtest.WaitSubscriptions(t, g.Embedded(), salesLive, 1)
	for i := range 5 {
		_ = nc.Publish(salesSubject, []byte(fmt.Sprintf(`{"ts":%d,"n":%d}`, time.Now().UnixMilli(), i)))
	}
	_ = nc.Publish(salesSubject, []byte(`[1]`))
	for range 5 {
		c.Expect("update")
	}
	var after map[string]float64
	roomtest.Eventually(t, 5*time.Second, func() error {
		after = scrape()
		if after["roomcast_updates_dropped_total"] < 1 {
			return fmt.Errorf("drop not counted yet")
		}
		return nil
	})
	grew := []string{
		"roomcast_connections", "roomcast_connections_accepted_total", "roomcast_rooms",
		"roomcast_nats_subscriptions", "roomcast_updates_received_total", "roomcast_updates_dropped_total",
		"roomcast_deliveries_total", "roomcast_frames_sent_total", "roomcast_messages_sent_total",
		"roomcast_bytes_sent_total", "roomcast_batch_messages_count", "roomcast_publish_to_send_seconds_count",
		"roomcast_client_errors_total",
	}
	for _, name := range grew {
		if after[name] <= before[name] {
			t.Errorf("%s did not move: %v → %v", name, before[name], after[name])
		}
	}
	present := []string{
		"roomcast_queued_messages", "roomcast_queued_bytes", "roomcast_queued_bytes_max", "roomcast_conflated_total",
		"roomcast_repaired_total", "roomcast_slow_disconnects_total", "roomcast_nats_connected", "roomcast_nats_reconnects_total",
		"roomcast_ready", "go_goroutines", "go_memstats_heap_inuse_bytes",
	}
	if runtime.GOOS == "linux" {
		present = append(present, "process_open_fds", "process_max_fds", "process_cpu_seconds_total", "process_resident_memory_bytes")
	}
	for _, name := range present {
		if _, ok := after[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	for _, name := range []string{"roomcast_nats_connected", "roomcast_ready"} {
		if after[name] != 1 {
			t.Errorf("%s = %v, want 1", name, after[name])
		}
	}
}

// labelled reads one series of g: name with exactly these labels.
func labelled(t testing.TB, g *gateway.Gateway, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestDisconnectsCounted: every close is counted, by code and by who
// closed, and the known label values are there at 0 before any event, so
// that rate() sees the first one.
func TestDisconnectsCounted(t *testing.T) {
	t.Parallel()
	g := roomtest.StartGateway(t, roomtest.Config(t, ""))
	for _, s := range []struct {
		name   string
		labels map[string]string
	}{
		{"roomcast_disconnects_total", map[string]string{"code": "1012", "by": "server"}},
		{"roomcast_disconnects_total", map[string]string{"code": "1000", "by": "client"}},
		{"roomcast_client_errors_total", map[string]string{"code": "bad_op"}},
		{"roomcast_updates_dropped_total", map[string]string{"reason": "not_object"}},
		{"roomcast_auth_failures_total", map[string]string{"reason": "expired"}},
		{"roomcast_connections_refused_total", map[string]string{"reason": "draining"}},
	} {
		if v, ok := labelled(t, g, s.name, s.labels); !ok || v != 0 {
			t.Errorf("%s%v = %v (present %v), want present at 0", s.name, s.labels, v, ok)
		}
	}

	closeWith := func(code int) func(*roomtest.Client) {
		return func(c *roomtest.Client) {
			_ = c.Conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
			c.ExpectCloseCode(5 * time.Second)
		}
	}
	for _, tc := range []struct {
		do       func(*roomtest.Client)
		code, by string
		what     string
	}{
		{closeWith(1000), "1000", "client", "a normal close"},
		{closeWith(1001), "1001", "client", "a page going away"},
		{closeWith(4321), "other", "client", "an application's code: one label for all, so clients cannot grow the label set"},
		{func(c *roomtest.Client) { c.Conn.NetConn().Close() }, "1006", "client", "a dropped socket"},
		{func(c *roomtest.Client) {
			_ = c.Conn.WriteMessage(websocket.BinaryMessage, []byte{1})
			c.ExpectClose(5 * time.Second)
		}, "1003", "server", "a binary frame"},
	} {
		c := roomtest.Dial(t, g)
		c.Join("sales")
		tc.do(c)
		labels := map[string]string{"code": tc.code, "by": tc.by}
		roomtest.Eventually(t, 5*time.Second, func() error {
			if v, _ := labelled(t, g, "roomcast_disconnects_total", labels); v != 1 {
				return fmt.Errorf("%s: disconnects%v = %v, want 1", tc.what, labels, v)
			}
			return nil
		})
	}
}

// TestMetricsListen: with metrics_listen, /metrics is served there and not
// on the public listener.
func TestMetricsListen(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.MetricsListen = "127.0.0.1:0"
	g := roomtest.StartGateway(t, cfg)
	if code, _ := roomtest.Get(t, roomtest.URL(g, "/metrics"), nil); code != http.StatusNotFound {
		t.Fatalf("/metrics on the public listener: %d, want 404", code)
	}
	if code, body := roomtest.Get(t, "http://"+g.MetricsAddr().String()+"/metrics", nil); code != 200 || !strings.Contains(body, "roomcast_connections") {
		t.Fatalf("/metrics on metrics_listen: %d", code)
	}
}

// TestMetricsListenThroughDrain: metrics_listen answers while the gateway
// drains (readiness 0), after the main listener has closed, and closes
// only when the shutdown is over.
func TestMetricsListenThroughDrain(t *testing.T) {
	t.Parallel()
	cfg := roomtest.Config(t, "")
	cfg.MetricsListen = "127.0.0.1:0"
	g := roomtest.StartGateway(t, cfg)
	metricsURL := "http://" + g.MetricsAddr().String() + "/metrics"
	// A client that never answers the close frame holds the drain open
	// for the close grace.
	c := roomtest.Dial(t, g)
	c.Join("sales")
	done := make(chan error, 1)
	go func() { done <- g.Shutdown(context.Background()) }()
	roomtest.Eventually(t, 5*time.Second, func() error {
		resp, err := http.Get(metricsURL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), "\nroomcast_ready 0\n") {
			return fmt.Errorf("roomcast_ready not 0 yet")
		}
		return nil
	})
	if _, err := http.Get(roomtest.URL(g, "/healthz")); err == nil {
		t.Error("the main listener still answers while draining")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(metricsURL); err == nil {
		t.Error("metrics_listen still answers after the shutdown")
	}
}

// TestShutdownDeadlineClosesHard: a client that never answers the close
// frame is dropped when the shutdown deadline passes, and nothing of the
// gateway is left running.
func TestShutdownDeadlineClosesHard(t *testing.T) {
	base := roomtest.Goroutines()
	g, err := gateway.Start(roomtest.Config(t, ""), gateway.Options{Log: roomtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // never read: the close frame is never answered
	roomtest.Eventually(t, 5*time.Second, func() error {
		if n := metric(t, g, "roomcast_connections"); n != 1 {
			return fmt.Errorf("%v connections", n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := g.Shutdown(ctx); err == nil || !strings.Contains(err.Error(), "closed hard") {
		t.Fatalf("Shutdown = %v, want the clients closed hard", err)
	}
	c.Close()
	roomtest.WaitGoroutines(t, base)
}

// budgetLog keeps the max_connections of the gateway's "connection
// budget" log line: the limit admission enforces.
type budgetLog struct {
	mu  sync.Mutex
	max int64 // -1: not logged
}

func (h *budgetLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *budgetLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *budgetLog) WithGroup(string) slog.Handler            { return h }
func (h *budgetLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "connection budget" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "max_connections" {
			h.mu.Lock()
			h.max = a.Value.Int64()
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// TestMaxConnectionsGauge: roomcast_max_connections is the limit the
// gateway enforces, also with limits.max_connections 0 (automatic, the
// shipped default), where it used to read 0 and made the dashboard's
// connections/limit +Inf.
func TestMaxConnectionsGauge(t *testing.T) {
	t.Parallel()
	for _, configured := range []int{0, 3} {
		t.Run(fmt.Sprint("max_connections=", configured), func(t *testing.T) {
			cfg := roomtest.Config(t, "")
			cfg.Limits.MaxConnections = configured
			h := &budgetLog{max: -1}
			g := roomtest.StartGatewayWith(t, cfg, gateway.Options{Log: slog.New(h)})
			h.mu.Lock()
			enforced := h.max
			h.mu.Unlock()
			if enforced <= 0 {
				t.Fatalf("connection budget logged max_connections %d", enforced)
			}
			if configured != 0 && enforced != int64(configured) {
				t.Fatalf("enforced %d, configured %d", enforced, configured)
			}
			if v := metric(t, g, "roomcast_max_connections"); v <= 0 || v != float64(enforced) {
				t.Fatalf("roomcast_max_connections = %v, want the enforced limit %d", v, enforced)
			}
		})
	}
}

// writers are the write paths the delivery tests run on: a writer
// goroutine per busy connection; the event-loop writer with io.uring
// auto (io_uring where this kernel allows it, else write(2)); and the
// event-loop writer with io.uring off, the fallback, always on write(2).
var writers = []string{"goroutine", "loop", "loop-write"}

// useWriter sets cfg up for one of writers.
func useWriter(cfg *config.Config, writer string) {
	cfg.Queue.Writer, cfg.IO.URing = writer, "auto"
	if writer == "loop-write" {
		cfg.Queue.Writer, cfg.IO.URing = "loop", "off"
	}
}
