package deploytest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/roomcast/roomcast/internal/roomtest"
)

// TestComposeTopology: docker-compose.yml (plus the override example's
// producer for a new room) as processes on loopback. Through HAProxy,
// clients get updates and spread over the gateways; when one gateway dies
// its clients reconnect through HAProxy to the others and resume without a
// gap, and so do those of a gateway stopped gracefully; the dashboard page
// works in headless Chromium; /metrics of gateways and producers move with
// the traffic.
func TestComposeTopology(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("ROOMCAST_CI") != "" {
			t.Fatal("haproxy is required in CI (apt-get install haproxy)")
		}
		t.Skip("haproxy not found; install Debian's haproxy package")
	}
	services := readCompose(t, "docker-compose.yml")
	override := readCompose(t, "docker-compose.override.example.yml")

	// The compose file's promises: only the load balancer has a host port,
	// and the gateway runs several replicas.
	for name, s := range services {
		switch {
		case len(s.Profiles) > 0:
		case name == "lb":
			if !slices.Equal(s.Ports, []string{"8080:8080"}) {
				t.Errorf("lb ports %v, want 8080:8080", s.Ports)
			}
		case len(s.Ports) > 0:
			t.Errorf("service %s has host ports %v; only the load balancer should", name, s.Ports)
		}
	}
	replicas := services["gateway"].Deploy.Replicas
	if replicas < 2 {
		t.Fatalf("gateway deploy.replicas = %d, want several", replicas)
	}

	bin := buildBinaries(t)
	var natsNames []string
	for _, s := range services {
		if s.Environment["NATS_SERVER_NAME"] != "" {
			natsNames = append(natsNames, s.Environment["NATS_SERVER_NAME"])
		}
	}
	sort.Strings(natsNames)
	if len(natsNames) != 3 {
		t.Fatalf("NATS nodes %v, want 3", natsNames)
	}
	addrs, _ := startNATS(t, natsNames)

	config, err := filepath.Abs(filepath.Join(repo, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// What the Dockerfile's ENV sets, then the service's environment.
	environment := func(s service) []string {
		env := []string{"ROOMCAST_CONFIG=" + config}
		for k, v := range s.Environment {
			env = append(env, k+"="+addrs.replace(v))
		}
		return env
	}

	// /metrics on its own port, so that a draining gateway (whose main
	// listener is closed) is still scraped until it exits.
	if services["gateway"].Environment["ROOMCAST_METRICS_LISTEN"] == "" {
		t.Error("the gateway service does not set ROOMCAST_METRICS_LISTEN")
	}
	var gateways []*process
	var gatewayAddrs, metricsAddrs []string
	for i := range replicas {
		addr := fmt.Sprintf("127.0.0.1:%d", roomtest.FreePort(t))
		maddr := fmt.Sprintf("127.0.0.1:%d", roomtest.FreePort(t))
		gatewayAddrs = append(gatewayAddrs, addr)
		metricsAddrs = append(metricsAddrs, maddr)
		gateways = append(gateways, start(t, fmt.Sprintf("gateway-%d", i+1),
			append(environment(services["gateway"]), "ROOMCAST_LISTEN="+addr, "ROOMCAST_METRICS_LISTEN="+maddr), filepath.Join(bin, "gateway")))
	}
	for i, addr := range gatewayAddrs {
		roomtest.Eventually(t, 30*time.Second, func() error {
			if gateways[i].exited() {
				t.Fatalf("gateway-%d exited:\n%s", i+1, gateways[i].output())
			}
			return get("http://"+addr+"/readyz", http.StatusOK)
		})
	}

	// Producers: one per room in docker-compose.yml, and the new room of
	// the override example.
	producerMetrics := map[string]string{}
	for _, f := range []map[string]service{services, override} {
		for name, s := range f {
			if !slices.Equal(s.Entrypoint, []string{"/usr/local/bin/producer"}) {
				continue
			}
			args := slices.Clone(s.Command)
			for i := range args {
				if i > 0 && args[i-1] == "--metrics-listen" {
					args[i] = fmt.Sprintf("127.0.0.1:%d", roomtest.FreePort(t))
					producerMetrics[name] = args[i]
				}
				for _, v := range s.Volumes { // host:container[:mode]
					parts := strings.Split(v, ":")
					if args[i] == parts[1] {
						args[i] = filepath.Join(repo, parts[0])
					}
				}
			}
			start(t, name, environment(s), filepath.Join(bin, "producer"), args...)
		}
	}
	for _, want := range []string{"producer-sales", "producer-visitors", "producer-orders"} {
		if producerMetrics[want] == "" {
			t.Fatalf("no %s service with --metrics-listen (have %v)", want, producerMetrics)
		}
	}

	lbAddr := fmt.Sprintf("127.0.0.1:%d", roomtest.FreePort(t))
	cfgFile := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(haproxyConfig(t, lbAddr, gatewayAddrs)), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(haproxy, "-c", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, b)
	}
	lb := start(t, "haproxy", nil, haproxy, "-db", "-f", cfgFile)
	lbURL := "http://" + lbAddr
	roomtest.Eventually(t, 30*time.Second, func() error {
		if lb.exited() {
			t.Fatalf("haproxy exited:\n%s", lb.output())
		}
		return get(lbURL+"/readyz", http.StatusOK)
	})

	t.Run("routes", func(t *testing.T) {
		resp := mustGet(t, lbURL+"/")
		if resp.StatusCode != http.StatusOK || hasCookie(resp, "ROOMCAST_LB") {
			t.Errorf("GET /: %s, cookies %v; want 200 without affinity", resp.Status, resp.Cookies())
		}
		if resp := mustGet(t, lbURL+"/metrics"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET /metrics through the load balancer: %s, want 403", resp.Status)
		}
		// Socket.IO (Engine.IO long-polling) is the one sticky path: new
		// sessions are spread and get a cookie naming their replica; a
		// request with the cookie goes to that replica, which HAProxy's
		// "insert indirect" shows by not setting the cookie again.
		seen := map[string]bool{}
		var cookie *http.Cookie
		for range 2 * len(gatewayAddrs) {
			resp := mustGet(t, lbURL+"/socket.io/?EIO=4&transport=polling")
			for _, c := range resp.Cookies() {
				if c.Name == "ROOMCAST_LB" {
					seen[c.Value], cookie = true, c
				}
			}
		}
		if len(seen) != len(gatewayAddrs) {
			t.Errorf("GET /socket.io/ set %d distinct affinity cookies, want one per gateway (%d)", len(seen), len(gatewayAddrs))
		}
		if cookie != nil {
			req, _ := http.NewRequest(http.MethodGet, lbURL+"/socket.io/?EIO=4&transport=polling&sid=x", nil)
			req.AddCookie(cookie)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if hasCookie(resp, "ROOMCAST_LB") {
				t.Errorf("a request with a valid affinity cookie got a new one: not routed by it")
			}
		}
		// The new room of the override example shows up.
		roomtest.Eventually(t, 30*time.Second, func() error {
			_, body := roomtest.Get(t, lbURL+"/api/rooms", nil)
			for _, room := range []string{`"sales"`, `"visitors"`, `"orders"`} {
				if !strings.Contains(body, room) {
					return fmt.Errorf("/api/rooms has no %s: %s", room, body)
				}
			}
			return nil
		})
	})

	// Clients through the load balancer, reconnecting (and resuming with
	// since) as roomcast.js does.
	const clients = 9
	var resumers []*roomtest.Resumer
	for range clients {
		r := roomtest.StartResumer([]string{lbAddr}, 0, []string{"sales"})
		t.Cleanup(r.Stop)
		resumers = append(resumers, r)
	}
	orders := roomtest.StartResumer([]string{lbAddr}, 0, []string{"orders"})
	t.Cleanup(orders.Stop)
	waitUpdates(t, append([]*roomtest.Resumer{orders}, resumers...), nil, 1)

	connections := func(live []string) ([]float64, error) {
		var out []float64
		for _, addr := range live {
			m, err := scrape("http://" + addr + "/metrics")
			if err != nil {
				return nil, err
			}
			out = append(out, m["roomcast_connections"])
		}
		return out, nil
	}
	var spread []float64
	roomtest.Eventually(t, 10*time.Second, func() error {
		spread, err = connections(metricsAddrs)
		if err != nil {
			return err
		}
		total := 0.0
		for _, n := range spread {
			total += n
		}
		if total != clients+1 {
			return fmt.Errorf("gateways hold %v connections, want %d in all", spread, clients+1)
		}
		return nil
	})
	for i, n := range spread {
		if n == 0 {
			t.Errorf("gateway-%d got no client: the load balancer does not spread (%v)", i+1, spread)
		}
	}

	// The dashboard through the load balancer.
	b := roomtest.StartBrowser(t, 1280, 800)
	b.Do(t, 20*time.Second, chromedp.Navigate(lbURL+"/?rooms=sales,visitors"))
	b.WaitJS(t, 20*time.Second, `document.querySelector('#conn').dataset.state === 'live'`)
	// A number of each demo room (visitors_day has no "visitors" key:
	// online now is its live number).
	for room, key := range map[string]string{"sales": "sales", "visitors": "online"} {
		b.WaitJS(t, 20*time.Second, value(room, key)+` && /\d/.test(`+value(room, key)+`)`)
	}

	// A gateway dies: its clients come back through the load balancer on
	// the others, and every client gets new updates without a gap.
	var before []int
	for _, r := range resumers {
		before = append(before, r.Result().Updates)
	}
	gateways[0].kill()
	roomtest.Eventually(t, 30*time.Second, func() error {
		spread, err := connections(metricsAddrs[1:])
		if err != nil {
			return err
		}
		total := 0.0
		for _, n := range spread {
			total += n
		}
		// Clients, the orders client and the page.
		if total != clients+2 {
			return fmt.Errorf("remaining gateways hold %v connections, want %d", spread, clients+2)
		}
		return nil
	})
	waitUpdates(t, resumers, before, 2)
	moved := 0
	for i, r := range resumers {
		res := r.Result()
		if len(res.Lost) > 0 {
			moved++
		}
		if len(res.Gaps) > 0 {
			t.Errorf("client %d: gaps after failover: %v", i, res.Gaps)
		}
	}
	if moved == 0 {
		t.Error("no client was on the killed gateway")
	}
	t.Logf("connections per gateway before the kill %v; %d of %d sales clients moved", spread, moved, clients)
	b.WaitJS(t, 30*time.Second, `document.querySelector('#conn').dataset.state === 'live'`)
	// Sales per minute changes with every update (today's total only in
	// ¥100K steps).
	last := roomtest.Eval[string](t, b, value("sales", "per_minute"))
	b.WaitJS(t, 20*time.Second, value("sales", "per_minute")+` !== `+fmt.Sprintf("%q", last))
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}

	// A graceful stop (docker compose stop, a rollout): SIGTERM makes the
	// gateway fail its health check and close its clients with 1012; they
	// move through HAProxy to the last gateway, again without a gap, and
	// the process exits 0.
	before = before[:0]
	for _, r := range resumers {
		before = append(before, r.Result().Updates)
	}
	if err := gateways[1].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gateways[1].done:
	case <-time.After(30 * time.Second):
		t.Fatal("gateway-2 did not exit within 30s of SIGTERM")
	}
	if code := gateways[1].cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("gateway-2 exited %d after SIGTERM, want 0", code)
	}
	roomtest.Eventually(t, 30*time.Second, func() error {
		spread, err := connections(metricsAddrs[2:])
		if err != nil {
			return err
		}
		if spread[0] != clients+2 {
			return fmt.Errorf("last gateway holds %v connections, want %d", spread[0], clients+2)
		}
		return nil
	})
	waitUpdates(t, resumers, before, 1)
	for i, r := range resumers {
		if res := r.Result(); len(res.Gaps) > 0 {
			t.Errorf("client %d: gaps after the drain: %v", i, res.Gaps)
		}
	}

	// Metrics of the last gateway and of the producers.
	for _, addr := range metricsAddrs[2:] {
		m, err := scrape("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"roomcast_ready", "roomcast_nats_connected"} {
			if m[name] != 1 {
				t.Errorf("%s: %s = %v, want 1", addr, name, m[name])
			}
		}
		for _, name := range []string{"roomcast_connections", "roomcast_rooms", "roomcast_nats_subscriptions",
			"roomcast_updates_received_total", "roomcast_deliveries_total", "roomcast_bytes_sent_total",
			"roomcast_batch_messages_count", "roomcast_publish_to_send_seconds_count"} {
			if m[name] <= 0 {
				t.Errorf("%s: %s = %v, want > 0", addr, name, m[name])
			}
		}
	}
	for name, addr := range producerMetrics {
		m, err := scrape("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if m["roomcast_producer_published_total"] <= 0 || m["roomcast_producer_errors_total"] != 0 {
			t.Errorf("%s: published %v, errors %v", name, m["roomcast_producer_published_total"], m["roomcast_producer_errors_total"])
		}
	}
}

// waitUpdates waits until every client has at least n more updates than
// before (nil: than none).
func waitUpdates(t *testing.T, rs []*roomtest.Resumer, before []int, n int) {
	t.Helper()
	roomtest.Eventually(t, 30*time.Second, func() error {
		for i, r := range rs {
			base := 0
			if before != nil {
				base = before[i]
			}
			if got := r.Result().Updates; got < base+n {
				return fmt.Errorf("client %d: %d updates, want %d", i, got, base+n)
			}
		}
		return nil
	})
}

func value(room, key string) string {
	return fmt.Sprintf(`(document.querySelector('.panel[data-room="%s"] .card[data-key="%s"] .value') || {}).textContent`, room, key)
}

func get(url string, want int) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func mustGet(t *testing.T, url string) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func hasCookie(resp *http.Response, name string) bool {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return true
		}
	}
	return false
}
