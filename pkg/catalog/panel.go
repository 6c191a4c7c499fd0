package catalog

import (
	"fmt"
	"regexp"
)

// Panel kinds: how a dashboard draws a metric. The producer, which knows
// what its numbers mean, says so in the entry; a metric without a panel is
// drawn as PanelLine, as every metric was before panel kinds existed.
const (
	PanelNumber  = "number"  // a big number; with target, compare, thresholds
	PanelLine    = "line"    // a big number over a line chart of the day so far
	PanelTotal   = "total"   // a running total the producer sends (today's orders)
	PanelRanking = "ranking" // top N of an array of {name, value}
	PanelShare   = "share"   // a donut of an object of parts ({"app": 52, "web": 31})
	PanelList    = "list"    // a scrolling feed of the latest items (orders)
)

// Number formats. Languages decide the rest: 万/亿 and ¥ in Chinese, K/M
// in English.
const (
	FormatPlain   = "plain"   // the number with the language's separators
	FormatCompact = "compact" // 12.3万 / 123K
	FormatMoney   = "money"   // compact with the currency sign: ¥12.3万 / ¥123K
	FormatPercent = "percent" // a ratio: 0.123 → 12.3%
)

// Limits on the panel description.
const (
	MaxCompares   = 4
	MaxThresholds = 8
	MaxNames      = 64
	MaxTop        = 50
	MaxSpan       = 12
	MaxDecimals   = 6
)

// Target is the goal a number is measured against: a fixed value or a
// field of each update. The dashboard draws progress toward it.
type Target struct {
	Value *float64 `json:"value,omitempty"`
	Key   string   `json:"key,omitempty"`
	Label Text     `json:"label,omitempty"`
	// Style is "bar" (default) or "gauge".
	Style string `json:"style,omitempty"`
}

// Compare shows the change against a base value the producer sends in
// field Key (yesterday at this time for 同比/day-on-day, the previous hour
// for 环比), as a signed percentage.
type Compare struct {
	Key   string `json:"key"`
	Label Text   `json:"label,omitempty"`
}

// Threshold is a colour rule: the first rule whose bound the value passes
// colours the number (and its gauge or bar).
type Threshold struct {
	Above *float64 `json:"above,omitempty"`
	Below *float64 `json:"below,omitempty"`
	// Color is good, warn, bad, or a #rgb / #rrggbb colour.
	Color string `json:"color"`
}

// Size is a panel's span on its room's grid, in cells.
type Size struct {
	W int `json:"w,omitempty"`
	H int `json:"h,omitempty"`
}

var (
	currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)
	colorValue   = regexp.MustCompile(`^(good|warn|bad|#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6})$`)
)

func oneOf(v string, allowed ...string) bool {
	if v == "" {
		return true
	}
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

// checkPanel validates the drawing fields of metric m, named field.
func (m *Metric) checkPanel(field string) error {
	if !oneOf(m.Panel, PanelNumber, PanelLine, PanelTotal, PanelRanking, PanelShare, PanelList) {
		return fmt.Errorf("%s.panel: %q is not one of number, line, total, ranking, share, list", field, m.Panel)
	}
	if !oneOf(m.Format, FormatPlain, FormatCompact, FormatMoney, FormatPercent) {
		return fmt.Errorf("%s.format: %q is not one of plain, compact, money, percent", field, m.Format)
	}
	if m.Currency != "" && !currencyCode.MatchString(m.Currency) {
		return fmt.Errorf("%s.currency: %q is not an ISO 4217 code like CNY", field, m.Currency)
	}
	if m.Decimals != nil && (*m.Decimals < 0 || *m.Decimals > MaxDecimals) {
		return fmt.Errorf("%s.decimals: must be 0 to %d", field, MaxDecimals)
	}
	if m.Top < 0 || m.Top > MaxTop {
		return fmt.Errorf("%s.top: must be 0 to %d", field, MaxTop)
	}
	if t := m.Target; t != nil {
		if (t.Value == nil) == (t.Key == "") {
			return fmt.Errorf("%s.target: give either value or key", field)
		}
		if err := checkText(field+".target.key", t.Key, false); err != nil {
			return err
		}
		if err := t.Label.check(field+".target.label", false); err != nil {
			return err
		}
		if !oneOf(t.Style, "bar", "gauge") {
			return fmt.Errorf("%s.target.style: %q is not bar or gauge", field, t.Style)
		}
	}
	if len(m.Compare) > MaxCompares {
		return fmt.Errorf("%s.compare: %d comparisons, the limit is %d", field, len(m.Compare), MaxCompares)
	}
	for i, c := range m.Compare {
		f := fmt.Sprintf("%s.compare[%d]", field, i)
		if err := checkText(f+".key", c.Key, true); err != nil {
			return err
		}
		if err := c.Label.check(f+".label", false); err != nil {
			return err
		}
	}
	if len(m.Thresholds) > MaxThresholds {
		return fmt.Errorf("%s.thresholds: %d rules, the limit is %d", field, len(m.Thresholds), MaxThresholds)
	}
	for i, th := range m.Thresholds {
		f := fmt.Sprintf("%s.thresholds[%d]", field, i)
		if (th.Above == nil) == (th.Below == nil) {
			return fmt.Errorf("%s: give either above or below", f)
		}
		if !colorValue.MatchString(th.Color) {
			return fmt.Errorf("%s.color: %q is not good, warn, bad or a #rrggbb colour", f, th.Color)
		}
	}
	if s := m.Size; s != nil && (s.W < 0 || s.W > MaxSpan || s.H < 0 || s.H > MaxSpan) {
		return fmt.Errorf("%s.size: w and h must be 0 to %d cells", field, MaxSpan)
	}
	if len(m.Names) > MaxNames {
		return fmt.Errorf("%s.names: %d names, the limit is %d", field, len(m.Names), MaxNames)
	}
	for k, t := range m.Names {
		if err := checkText(field+".names key", k, true); err != nil {
			return err
		}
		if err := t.check(field+".names."+k, true); err != nil {
			return err
		}
	}
	return nil
}
