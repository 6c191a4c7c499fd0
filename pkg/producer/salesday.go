package producer

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/roomcast/roomcast/pkg/catalog"
)

// The demo's rooms simulate an electronics shop's day, so that the demo
// screen looks like a sales day rather than white noise: orders arrive at
// random (a Poisson process) at a rate that follows the hour (quiet at
// night, busy late morning, afternoon and evening), each with a product,
// a region, a channel and an amount; totals run from midnight. A room that
// starts mid-day starts from the totals the day would have reached by
// then, so that a fresh demo does not show a shop that opened a second ago.

// activity is the shop's relative activity at hour h (0–24): 0.3 at
// night (an online shop never sleeps), about 1.3 at the evening peak.
func activity(h float64) float64 {
	g := func(mu, sd, a float64) float64 { d := (h - mu) / sd; return a * math.Exp(-d*d/2) }
	return 0.3 + g(10.5, 1.3, 0.7) + g(15, 1.8, 0.6) + g(20.8, 1.4, 1.0)
}

// activitySince integrates activity from midnight to the time of day of
// t, in peak-minutes.
func activitySince(t time.Time) float64 {
	mid := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	minutes := t.Sub(mid).Minutes()
	sum := 0.0
	for m := 0.0; m < minutes; m++ {
		sum += activity((m+0.5)/60) * math.Min(1, minutes-m)
	}
	return sum
}

const (
	ordersPerPeakMinute = 60   // orders per minute at activity 1
	visitorsOnlinePeak  = 4200 // people on the site at activity 1
	uvPerPeakMinute     = 900  // new unique visitors per minute at activity 1
	lastWeekRatio       = 0.91
	yesterdayRatio      = 0.97
)

type part struct {
	key    string
	zh, en string
	weight float64
	price  float64 // products: the typical price in yuan
}

var (
	products = []part{
		{"phone", "手机", "Phones", 0.22, 3299},
		{"laptop", "笔记本", "Laptops", 0.08, 5999},
		{"earbuds", "耳机", "Earbuds", 0.20, 399},
		{"watch", "手表", "Watches", 0.10, 1299},
		{"tablet", "平板", "Tablets", 0.07, 2599},
		{"charger", "充电器", "Chargers", 0.18, 99},
		{"speaker", "音箱", "Speakers", 0.15, 499},
	}
	regions = []part{
		{key: "east", zh: "华东", en: "East", weight: 0.30},
		{key: "south", zh: "华南", en: "South", weight: 0.22},
		{key: "north", zh: "华北", en: "North", weight: 0.18},
		{key: "central", zh: "华中", en: "Central", weight: 0.12},
		{key: "southwest", zh: "西南", en: "Southwest", weight: 0.10},
		{key: "northwest", zh: "西北", en: "Northwest", weight: 0.04},
		{key: "northeast", zh: "东北", en: "Northeast", weight: 0.04},
	}
	channels = []part{
		{key: "app", zh: "App", en: "App", weight: 0.46},
		{key: "mini", zh: "小程序", en: "Mini app", weight: 0.24},
		{key: "web", zh: "网站", en: "Website", weight: 0.18},
		{key: "store", zh: "门店", en: "Stores", weight: 0.12},
	}
)

// avgOrder is the expected amount of an order.
func avgOrder() float64 {
	s := 0.0
	for _, p := range products {
		s += p.weight * p.price * 1.15 // quantity: 1, sometimes 2
	}
	return s
}

func names(parts ...[]part) map[string]catalog.Text {
	out := map[string]catalog.Text{}
	for _, ps := range parts {
		for _, p := range ps {
			out[p.key] = catalog.Text{"zh": p.zh, "en": p.en}
		}
	}
	return out
}

func pick(rnd *rand.Rand, parts []part) int {
	r := rnd.Float64()
	for i, p := range parts {
		if r -= p.weight; r < 0 {
			return i
		}
	}
	return len(parts) - 1
}

// poisson draws from a Poisson distribution of mean lambda (small: Knuth).
func poisson(rnd *rand.Rand, lambda float64) int {
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rnd.Float64()
		if p <= l || k > 1000 {
			return k
		}
		k++
	}
}

func ptr[T any](v T) *T { return &v }

// SalesTarget is the demo shop's daily sales target: 5 % above an average
// day, in yuan, rounded to a million.
func SalesTarget() float64 {
	full := activitySince(time.Date(2000, 1, 1, 23, 59, 59, 0, time.UTC)) * ordersPerPeakMinute * avgOrder()
	return math.Round(full*1.05/1e6) * 1e6
}

// salesDay is the generator of the demo's sales room.
type salesDay struct {
	room Room
	rnd  *rand.Rand
	day  int // day of the year the totals belong to
	last time.Time

	sales, orders float64
	perMinute     float64 // sales per minute, smoothed
	byProduct     []float64
	byRegion      []float64
	byChannel     []float64
}

func newSalesDay(room Room, rnd *rand.Rand) *salesDay {
	return &salesDay{room: room, rnd: rnd,
		byProduct: make([]float64, len(products)), byRegion: make([]float64, len(regions)), byChannel: make([]float64, len(channels))}
}

func (s *salesDay) Entry() catalog.Entry {
	money := func(m catalog.Metric) catalog.Metric {
		m.Format, m.Currency = catalog.FormatMoney, "CNY"
		return m
	}
	return catalog.Entry{
		Room:       s.room.Room,
		Title:      catalog.Text{"zh": "今日销售", "en": "Sales today"},
		IntervalMS: s.room.Interval.Milliseconds(),
		Metrics: []catalog.Metric{
			money(catalog.Metric{Key: "sales", Label: catalog.Text{"zh": "销售额", "en": "Sales"}, Panel: catalog.PanelNumber, Decimals: ptr(1),
				Target:  &catalog.Target{Value: ptr(SalesTarget()), Label: catalog.Text{"zh": "目标", "en": "Target"}, Style: "gauge"},
				Compare: []catalog.Compare{{Key: "sales_lw", Label: catalog.Text{"zh": "同比上周", "en": "vs last week"}}},
				Size:    &catalog.Size{W: 2, H: 1}}),
			{Key: "orders", Label: catalog.Text{"zh": "订单数", "en": "Orders"}, Unit: catalog.Text{"zh": "单", "en": ""}, Panel: catalog.PanelTotal,
				Format: catalog.FormatPlain, Decimals: ptr(0),
				Compare: []catalog.Compare{{Key: "orders_yd", Label: catalog.Text{"zh": "环比昨日", "en": "vs yesterday"}}}},
			money(catalog.Metric{Key: "per_minute", Label: catalog.Text{"zh": "每分钟销售额", "en": "Sales per minute"}, Panel: catalog.PanelLine,
				Decimals: ptr(1)}),
			money(catalog.Metric{Key: "products", Label: catalog.Text{"zh": "热销商品", "en": "Top products"}, Panel: catalog.PanelRanking,
				Top: 5, Decimals: ptr(1), Names: names(products), Size: &catalog.Size{W: 1, H: 2}}),
			money(catalog.Metric{Key: "regions", Label: catalog.Text{"zh": "地区排行", "en": "Top regions"}, Panel: catalog.PanelRanking,
				Top: 5, Decimals: ptr(1), Names: names(regions), Size: &catalog.Size{W: 1, H: 2}}),
			money(catalog.Metric{Key: "channels", Label: catalog.Text{"zh": "渠道占比", "en": "Channel mix"}, Panel: catalog.PanelShare,
				Decimals: ptr(1), Names: names(channels), Size: &catalog.Size{W: 1, H: 2}}),
			money(catalog.Metric{Key: "latest", Label: catalog.Text{"zh": "最新订单", "en": "Latest orders"}, Panel: catalog.PanelList,
				Top: 8, Names: names(products, regions), Size: &catalog.Size{W: 1, H: 2}}),
		},
	}
}

// reset starts the totals at what the day has reached by now, give or
// take a few per cent.
func (s *salesDay) reset(now time.Time) {
	s.day = now.YearDay()
	expected := activitySince(now) * ordersPerPeakMinute
	s.orders = math.Round(expected * (1 + 0.03*s.rnd.NormFloat64()))
	s.sales = 0
	for i, p := range products {
		v := s.orders * p.weight * p.price * 1.15 * (1 + 0.04*s.rnd.NormFloat64())
		s.byProduct[i] = math.Max(0, v)
		s.sales += s.byProduct[i]
	}
	// Regions and channels split the same sales: noisy weights, scaled so
	// that the parts add up to the total.
	split := func(out []float64, parts []part) {
		sum := 0.0
		for i, p := range parts {
			out[i] = p.weight * math.Max(0.1, 1+0.03*s.rnd.NormFloat64())
			sum += out[i]
		}
		for i := range out {
			out[i] *= s.sales / sum
		}
	}
	split(s.byRegion, regions)
	split(s.byChannel, channels)
	s.perMinute = activity(hourOf(now)) * ordersPerPeakMinute * avgOrder()
}

func hourOf(t time.Time) float64 {
	return float64(t.Hour()) + float64(t.Minute())/60 + float64(t.Second())/3600
}

func (s *salesDay) Sample(now time.Time) map[string]any {
	if s.last.IsZero() || now.YearDay() != s.day {
		s.reset(now)
		s.last = now
	}
	dt := now.Sub(s.last).Seconds()
	s.last = now
	n := poisson(s.rnd, activity(hourOf(now))*ordersPerPeakMinute/60*dt)
	latest := make([]map[string]any, 0, min(n, 5))
	added := 0.0
	for range n {
		pi, ri, ci := pick(s.rnd, products), pick(s.rnd, regions), pick(s.rnd, channels)
		qty := 1.0
		if s.rnd.Float64() < 0.15 {
			qty = 2
		}
		amount := math.Round(products[pi].price*qty*(0.85+0.3*s.rnd.Float64())/10)*10 - 1 // prices end in 9
		s.byProduct[pi] += amount
		s.byRegion[ri] += amount
		s.byChannel[ci] += amount
		added += amount
		if len(latest) < 5 {
			latest = append(latest, map[string]any{"time": now.Format("15:04:05"), "name": products[pi].key, "detail": regions[ri].key, "value": amount})
		}
	}
	s.sales += added
	s.orders += float64(n)
	// Sales per minute, smoothed over about half a minute.
	if dt > 0 {
		a := 1 - math.Exp(-dt/30)
		s.perMinute += a * (added/dt*60 - s.perMinute)
	}
	expected := activitySince(now)
	ranked := func(parts []part, vals []float64) []map[string]any {
		out := make([]map[string]any, len(parts))
		for i, p := range parts {
			out[i] = map[string]any{"name": p.key, "value": math.Round(vals[i])}
		}
		slices.SortStableFunc(out, func(a, b map[string]any) int { return cmp.Compare(b["value"].(float64), a["value"].(float64)) })
		return out
	}
	// The channel shares add up to the sales shown: each part is the
	// rounded running sum less the one before it, and the last running
	// sum is the total itself.
	sales := math.Round(s.sales)
	shares := make(map[string]any, len(channels))
	cum, prev := 0.0, 0.0
	for i, c := range channels {
		cum += s.byChannel[i]
		next := math.Min(sales, math.Round(cum))
		if i == len(channels)-1 {
			next = sales
		}
		shares[c.key] = math.Max(0, next-prev)
		prev = math.Max(prev, next)
	}
	return map[string]any{
		"sales":      sales,
		"sales_lw":   math.Round(expected * ordersPerPeakMinute * avgOrder() * lastWeekRatio),
		"orders":     s.orders,
		"orders_yd":  math.Round(expected * ordersPerPeakMinute * yesterdayRatio),
		"per_minute": math.Round(s.perMinute),
		"products":   ranked(products, s.byProduct),
		"regions":    ranked(regions, s.byRegion),
		"channels":   shares,
		"latest":     latest,
		"timestamp":  now.Format("15:04:05"),
	}
}

// visitorsDay is the generator of the demo's visitors room.
type visitorsDay struct {
	room  Room
	rnd   *rand.Rand
	day   int
	last  time.Time
	noise float64 // slow, mean-reverting wobble of the online count
	uv    float64
}

func (v *visitorsDay) Entry() catalog.Entry {
	return catalog.Entry{
		Room:       v.room.Room,
		Title:      catalog.Text{"zh": "访客", "en": "Visitors"},
		IntervalMS: v.room.Interval.Milliseconds(),
		Metrics: []catalog.Metric{
			{Key: "online", Label: catalog.Text{"zh": "在线访客", "en": "Online now"}, Unit: catalog.Text{"zh": "人", "en": ""}, Panel: catalog.PanelLine,
				Format: catalog.FormatPlain, Decimals: ptr(0), Size: &catalog.Size{W: 2, H: 1}},
			{Key: "uv", Label: catalog.Text{"zh": "今日访客", "en": "Visitors today"}, Panel: catalog.PanelTotal, Format: catalog.FormatCompact, Decimals: ptr(1),
				Compare: []catalog.Compare{{Key: "uv_yd", Label: catalog.Text{"zh": "环比昨日", "en": "vs yesterday"}}}},
			{Key: "conversion", Label: catalog.Text{"zh": "转化率", "en": "Conversion"}, Panel: catalog.PanelNumber, Format: catalog.FormatPercent, Decimals: ptr(2),
				Target: &catalog.Target{Value: ptr(0.07), Label: catalog.Text{"zh": "目标", "en": "Target"}},
				Thresholds: []catalog.Threshold{
					{Below: ptr(0.04), Color: "bad"}, {Below: ptr(0.06), Color: "warn"}, {Above: ptr(0.06), Color: "good"},
				}},
		},
	}
}

func (v *visitorsDay) Sample(now time.Time) map[string]any {
	if v.last.IsZero() || now.YearDay() != v.day {
		v.day, v.last = now.YearDay(), now
		v.uv = activitySince(now) * uvPerPeakMinute * (1 + 0.02*v.rnd.NormFloat64())
	}
	dt := now.Sub(v.last).Seconds()
	v.last = now
	a := activity(hourOf(now))
	v.noise = 0.97*v.noise + 0.01*v.rnd.NormFloat64()
	v.uv += a * uvPerPeakMinute / 60 * dt * (1 + v.noise)
	expected := activitySince(now)
	orders := expected * ordersPerPeakMinute
	return map[string]any{
		"online":     math.Round(a * visitorsOnlinePeak * (1 + v.noise + 0.01*v.rnd.NormFloat64())),
		"uv":         math.Round(v.uv),
		"uv_yd":      math.Round(expected * uvPerPeakMinute * yesterdayRatio),
		"conversion": math.Round(orders/math.Max(1, v.uv)*(1+0.02*v.rnd.NormFloat64())*1e4) / 1e4,
		"timestamp":  now.Format("15:04:05"),
	}
}
