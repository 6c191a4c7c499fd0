package catalog

import (
	"log/slog"
	"testing"
)

// TestVersionFollowsContent: re-announcing an unchanged entry (producers do
// it every announce_interval) does not count as a change.
func TestVersionFollowsContent(t *testing.T) {
	t.Parallel()
	s := NewStore(DefaultBucket, 1, slog.New(slog.DiscardHandler))
	entry := []byte(`{"title":"Sales","metrics":[{"key":"sales","label":"Sales"}]}`)
	steps := []struct {
		do      func()
		changed bool
	}{
		{func() { s.put("sales", entry) }, true},
		{func() { s.put("sales", entry) }, false},
		{func() { s.put("sales", []byte(`{"title":"Sales","metrics":[{"key":"sales","label":"Sales"}]}`)) }, false},
		{func() { s.put("sales", []byte(`{"title":"Sales 2"}`)) }, true},
		{func() { s.put("sales", []byte(`not json`)) }, false},
		{func() { s.remove("nothing") }, false},
		{func() { s.remove("sales") }, true},
	}
	for i, st := range steps {
		_, before := s.List()
		st.do()
		if _, after := s.List(); (after != before) != st.changed {
			t.Fatalf("step %d: version %d → %d, want changed=%v", i, before, after, st.changed)
		}
	}
}
