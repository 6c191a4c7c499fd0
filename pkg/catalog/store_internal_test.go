package catalog

import (
	"log/slog"
	"testing"
	"time"
)

// TestVersionFollowsContent: re-announcing an unchanged entry (producers do
// it every announce_interval) does not count as a change.
func TestVersionFollowsContent(t *testing.T) {
	t.Parallel()
	s := NewStore(DefaultBucket, 1, 0, slog.New(slog.DiscardHandler))
	entry := []byte(`{"title":"Sales","metrics":[{"key":"sales","label":"Sales"}]}`)
	steps := []struct {
		do      func()
		changed bool
	}{
		{func() { s.put("sales", entry, time.Now()) }, true},
		{func() { s.put("sales", entry, time.Now()) }, false},
		{func() {
			s.put("sales", []byte(`{"title":"Sales","metrics":[{"key":"sales","label":"Sales"}]}`), time.Now())
		}, false},
		{func() { s.put("sales", []byte(`{"title":"Sales 2"}`), time.Now()) }, true},
		{func() { s.put("sales", []byte(`not json`), time.Now()) }, false},
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

// TestExpiry: an entry not announced again within expireAfter leaves the
// list; a stored entry older than that is not listed at all (a gateway
// started after its producer died); screens do not expire.
func TestExpiry(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := NewStore(DefaultBucket, 1, time.Minute, slog.New(slog.DiscardHandler))
	s.now = func() time.Time { return now }
	entry := []byte(`{"title":"Sales"}`)
	s.put("sales", entry, now)
	s.put("old", entry, now.Add(-2*time.Minute))
	s.put(ScreenKeyPrefix+"wall", []byte(`{"title":"Wall","panels":[{"room":"sales"}]}`), now.Add(-time.Hour))
	rooms := func() (names []string) {
		list, _ := s.List()
		for _, e := range list {
			names = append(names, e.Room)
		}
		return names
	}
	if got := rooms(); len(got) != 1 || got[0] != "sales" {
		t.Fatalf("rooms %v, want [sales]", got)
	}
	now = now.Add(50 * time.Second)
	s.put("sales", entry, now) // re-announced
	now = now.Add(50 * time.Second)
	if got := rooms(); len(got) != 1 {
		t.Fatalf("a re-announced room expired: %v", got)
	}
	_, v := s.List()
	now = now.Add(11 * time.Second)
	if got := rooms(); len(got) != 0 {
		t.Fatalf("rooms %v after expiry, want none", got)
	}
	if _, v2 := s.List(); v2 == v {
		t.Fatal("expiry did not change the version")
	}
	if sc := s.Screens(); len(sc) != 1 || sc[0].Name != "wall" || sc[0].Title.String() != "Wall" {
		t.Fatalf("screens %+v", sc)
	}
	s.remove(ScreenKeyPrefix + "wall")
	if sc := s.Screens(); len(sc) != 0 {
		t.Fatalf("screens after delete %+v", sc)
	}
}
