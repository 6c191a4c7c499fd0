package deploytest

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
)

// TestMetricsDocumented: docs/metrics.md has a row for every roomcast_…
// series the gateway and the producer export, and none for a series
// that is not exported, so the page cannot drift from the code.
func TestMetricsDocumented(t *testing.T) {
	t.Parallel()
	exported := exportedSeries(t)
	b, err := os.ReadFile(filepath.Join(repo, "docs/metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(roomcast_[a-z0-9_]+)` \\|").FindAllStringSubmatch(string(b), -1) {
		if documented[m[1]] {
			t.Errorf("docs/metrics.md: %s has two rows", m[1])
		}
		documented[m[1]] = true
	}
	for _, name := range sorted(exported) {
		if !documented[name] {
			t.Errorf("%s is exported but has no row in docs/metrics.md", name)
		}
	}
	for _, name := range sorted(documented) {
		if !exported[name] {
			t.Errorf("docs/metrics.md documents %s, which nothing exports", name)
		}
	}
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
