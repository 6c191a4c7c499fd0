package producer

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestSalesDayPartsAddUp: the channel shares the demo publishes add up to
// its sales total exactly (the donut's centre is the sales card's
// number), and the regions to it within their rounding, from a start in
// the middle of the day and over many updates after it.
func TestSalesDayPartsAddUp(t *testing.T) {
	for seed := range uint64(20) {
		s := newSalesDay(Room{Room: "sales", Interval: time.Second}, rand.New(rand.NewPCG(seed, 7)))
		now := time.Date(2026, 3, 2, 1+int(seed), 17, 3, 0, time.UTC)
		for i := range 200 {
			v := s.Sample(now.Add(time.Duration(i) * 700 * time.Millisecond))
			sales := v["sales"].(float64)
			sum := 0.0
			for k, x := range v["channels"].(map[string]any) {
				if x.(float64) < 0 {
					t.Fatalf("seed %d: channel %s is %v", seed, k, x)
				}
				sum += x.(float64)
			}
			if sum != sales {
				t.Fatalf("seed %d, update %d: channels add up to %v, sales are %v", seed, i, sum, sales)
			}
			byRegion := 0.0
			for _, r := range v["regions"].([]map[string]any) {
				byRegion += r["value"].(float64)
			}
			if d := math.Abs(byRegion - sales); d > float64(len(regions)) {
				t.Fatalf("seed %d, update %d: regions add up to %v, sales are %v", seed, i, byRegion, sales)
			}
		}
	}
}
