package deploytest

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGrafanaDashboard: deploy/grafana/roomcast.json is valid, every
// panel uses the templated data source, and every roomcast_… series it
// queries is one the gateway or producer exports.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	exported := exportedSeries(t)
	b, err := os.ReadFile(filepath.Join(repo, "deploy/grafana/roomcast.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Type, Name, Query any
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID          int             `json:"id"`
			Type        string          `json:"type"`
			Title       string          `json:"title"`
			Datasource  json.RawMessage `json:"datasource"`
			FieldConfig struct {
				Defaults struct {
					NoValue    *string `json:"noValue"`
					Thresholds *struct {
						Steps []struct {
							Color string   `json:"color"`
							Value *float64 `json:"value"`
						} `json:"steps"`
					} `json:"thresholds"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct {
				Expr       string          `json:"expr"`
				Datasource json.RawMessage `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("roomcast.json: %v", err)
	}
	hasDSVar := false
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" && v.Query == "prometheus" {
			hasDSVar = true
		}
	}
	if !hasDSVar {
		t.Error("no datasource variable of type prometheus named datasource")
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	series := regexp.MustCompile(`roomcast_[a-z0-9_]+`)
	standard := regexp.MustCompile(`\b(up|process_[a-z_]+|go_[a-z_]+)\{`)
	const ds = `{"type":"prometheus","uid":"${datasource}"}`
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if compact(p.Datasource) != ds {
			t.Errorf("panel %q: datasource %s, want %s", p.Title, p.Datasource, ds)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Type == "stat" {
			// Grafana's default thresholds (red above 80) mean nothing
			// here: every stat sets its own, and says what no data is.
			th := p.FieldConfig.Defaults.Thresholds
			if th == nil || len(th.Steps) == 0 {
				t.Errorf("stat %q has Grafana's default thresholds", p.Title)
			} else {
				for _, st := range th.Steps {
					if st.Value != nil && *st.Value == 80 {
						t.Errorf("stat %q: a threshold at 80, Grafana's default", p.Title)
					}
				}
			}
		}
		for _, q := range p.Targets {
			for _, m := range standard.FindAllStringSubmatch(q.Expr, -1) {
				used[m[1]] = true
			}
			if compact(q.Datasource) != ds {
				t.Errorf("panel %q: query datasource %s, want %s", p.Title, q.Datasource, ds)
			}
			for _, name := range series.FindAllString(q.Expr, -1) {
				used[name] = true
				base := name
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if trimmed, ok := strings.CutSuffix(name, suffix); ok && exported[trimmed] {
						base = trimmed
					}
				}
				if !exported[base] {
					t.Errorf("panel %q queries %s, which nothing exports", p.Title, name)
				}
			}
		}
	}
	// The list: each must be on the dashboard.
	for _, name := range []string{"roomcast_connections", "roomcast_rooms", "roomcast_nats_subscriptions",
		"roomcast_updates_received_total", "roomcast_deliveries_total", "roomcast_bytes_sent_total",
		"roomcast_batch_messages_bucket", "roomcast_queued_messages", "roomcast_conflated_total",
		"roomcast_updates_dropped_total", "roomcast_slow_disconnects_total", "roomcast_auth_failures_total",
		"roomcast_connections_refused_total", "roomcast_tokens_expired_total", "roomcast_disconnects_total",
		"roomcast_client_errors_total", "roomcast_nats_connected", "roomcast_nats_reconnects_total",
		"roomcast_publish_to_send_seconds_bucket", "roomcast_producer_published_total", "roomcast_producer_errors_total",
		// Issue 17: the process row, up, Socket.IO, compression, replay
		// age, and connections against the limit.
		"roomcast_replay_age_seconds_bucket", "roomcast_socketio_sessions", "roomcast_compressed_messages_total",
		"roomcast_goroutines", "roomcast_max_connections", "up", "process_cpu_seconds_total",
		"process_resident_memory_bytes", "process_open_fds", "process_max_fds", "go_gc_duration_seconds_count"} {
		if !used[name] {
			t.Errorf("the dashboard does not show %s", name)
		}
	}
	// Ready gateways: red at 0, and no data (every gateway gone) reads 0.
	for _, p := range dash.Panels {
		if p.Title != "Ready gateways" {
			continue
		}
		d := p.FieldConfig.Defaults
		if d.NoValue == nil || *d.NoValue != "0" {
			t.Errorf("Ready gateways: noValue %v, want 0", d.NoValue)
		}
		if d.Thresholds == nil || len(d.Thresholds.Steps) < 2 || d.Thresholds.Steps[0].Color != "red" ||
			d.Thresholds.Steps[1].Value == nil || *d.Thresholds.Steps[1].Value != 1 {
			t.Errorf("Ready gateways: thresholds %+v, want red below 1", d.Thresholds)
		}
	}
}

func compact(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// exportedSeries lists the roomcast_… metric names declared in the
// non-test Go sources.
func exportedSeries(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	name := regexp.MustCompile(`Name:\s*"(roomcast_[a-z0-9_]+)"`)
	for _, dir := range []string{"pkg", "cmd"} {
		err := filepath.WalkDir(filepath.Join(repo, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range name.FindAllStringSubmatch(string(b), -1) {
				out[m[1]] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d metric names in the sources: %v", len(out), out)
	}
	return out
}
