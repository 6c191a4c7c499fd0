package ratelimit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	tests := []struct {
		name  string
		rate  float64
		burst int
		takes []time.Duration // offsets from start
		want  []bool
	}{
		{"burst then refused", 1, 3, []time.Duration{0, 0, 0, 0}, []bool{true, true, true, false}},
		{"refills at the rate", 10, 1, []time.Duration{0, 0, 50 * time.Millisecond, 100 * time.Millisecond}, []bool{true, false, false, true}},
		{"never above the burst", 100, 2, []time.Duration{time.Hour, time.Hour, time.Hour}, []bool{true, true, false}},
		{"a clock going back changes nothing", 1, 1, []time.Duration{time.Second, 0, 2 * time.Second}, []bool{true, false, true}},
	}
	for _, tt := range tests {
		b := New(tt.rate, tt.burst, start)
		for i, d := range tt.takes {
			if got := b.Take(start.Add(d)); got != tt.want[i] {
				t.Errorf("%s: take %d at +%v = %v, want %v", tt.name, i, d, got, tt.want[i])
			}
		}
	}
}
