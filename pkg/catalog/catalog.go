// Package catalog is the room catalogue: what each room is called and which
// metrics it carries (key, label, unit), announced by producers and listed
// by gateways at /api/rooms so that dashboards can build their cards.
// Titles, labels and units are Texts, one string or one per language; a
// metric may say how it is drawn (panel kind, format, target, comparisons,
// thresholds, size: panel.go). The bucket also keeps named dashboard
// screens (screen.go), and a gateway forgets rooms that are not announced
// again (NewStore's expireAfter).
//
// The catalogue lives in a JetStream key-value bucket (default
// "roomcast_catalog"), one key per room, the value an Entry as JSON. A
// producer announces a room by putting the entry under the room's key — or
// by a plain NATS publish of it to $KV.<bucket>.<room>, which is what a key
// put is, so any language or `nats kv put` can do it — and re-announces it
// periodically. Gateways watch the bucket, so a new room
// appears on every gateway without a restart. Without JetStream the gateway
// follows the same subjects on core NATS and learns rooms from the
// periodic announcements instead.
package catalog

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/roomcast/roomcast/pkg/protocol"
)

// DefaultBucket is the key-value bucket of the catalogue.
const DefaultBucket = "roomcast_catalog"

// Limits on an entry, so that one producer cannot blow up /api/rooms.
const (
	MaxEntryBytes = 16 << 10
	MaxMetrics    = 64
	MaxTextLen    = 128 // title, label, unit and key (each language), in characters
)

// Metric describes one metric of a room and, optionally, how to draw it
// (docs/client.md, "Panel kinds"). Every drawing field is optional.
type Metric struct {
	Key   string `json:"key"`
	Label Text   `json:"label"`
	Unit  Text   `json:"unit,omitempty"`

	Panel    string `json:"panel,omitempty"`    // a Panel… kind; default line
	Format   string `json:"format,omitempty"`   // a Format… name; default plain
	Currency string `json:"currency,omitempty"` // for money; default CNY
	Decimals *int   `json:"decimals,omitempty"` // digits after the point

	Target     *Target     `json:"target,omitempty"`
	Compare    []Compare   `json:"compare,omitempty"`
	Thresholds []Threshold `json:"thresholds,omitempty"`
	// Top is how many rows a ranking or list shows.
	Top int `json:"top,omitempty"`
	// Names label the parts of a share or ranking, or the items of a
	// list, by the name the producer sends ("app" → {"zh":"App","en":"App"}).
	Names map[string]Text `json:"names,omitempty"`
	Size  *Size           `json:"size,omitempty"`
}

// Entry is the catalogue entry of a room.
type Entry struct {
	Room    string   `json:"room"`
	Title   Text     `json:"title"`
	Metrics []Metric `json:"metrics"`
	// IntervalMS is how often the room is normally updated, so that a
	// dashboard can tell a stale room from a slow one. Optional.
	IntervalMS int64 `json:"interval_ms,omitempty"`
}

// Validate checks an entry; the error names the offending field.
func (e *Entry) Validate() error {
	if err := protocol.CheckRoom(e.Room); err != nil {
		return fmt.Errorf("room: %w", err)
	}
	if err := e.Title.check("title", true); err != nil {
		return err
	}
	if len(e.Metrics) > MaxMetrics {
		return fmt.Errorf("metrics: %d metrics, the limit is %d", len(e.Metrics), MaxMetrics)
	}
	seen := make(map[string]bool, len(e.Metrics))
	for i, m := range e.Metrics {
		field := fmt.Sprintf("metrics[%d]", i)
		if err := checkText(field+".key", m.Key, true); err != nil {
			return err
		}
		if seen[m.Key] {
			return fmt.Errorf("%s.key: duplicate key %q", field, m.Key)
		}
		seen[m.Key] = true
		if err := m.Label.check(field+".label", false); err != nil {
			return err
		}
		if err := m.Unit.check(field+".unit", false); err != nil {
			return err
		}
		if err := m.checkPanel(field); err != nil {
			return err
		}
	}
	if e.IntervalMS < 0 {
		return fmt.Errorf("interval_ms: must not be negative")
	}
	return nil
}

func checkText(field, s string, required bool) error {
	switch {
	case required && s == "":
		return fmt.Errorf("%s: required", field)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s: not valid UTF-8", field)
	case utf8.RuneCountInString(s) > MaxTextLen:
		return fmt.Errorf("%s: longer than %d characters", field, MaxTextLen)
	}
	return nil
}

// Parse decodes and validates the entry announced under key room. An entry
// without "room" takes the key; one with another room is refused.
func Parse(room string, data []byte) (Entry, error) {
	if len(data) > MaxEntryBytes {
		return Entry{}, fmt.Errorf("entry is %d bytes, the limit is %d", len(data), MaxEntryBytes)
	}
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return Entry{}, fmt.Errorf("entry is not a JSON object of the catalogue shape: %w", err)
	}
	if e.Room == "" {
		e.Room = room
	}
	if e.Room != room {
		return Entry{}, fmt.Errorf("room: entry names %q but was announced for %q", e.Room, room)
	}
	if e.Metrics == nil {
		e.Metrics = []Metric{}
	}
	// Empty lists and maps are the same as none, and are encoded as none:
	// one shape per meaning, so that an entry survives a round trip.
	for i := range e.Metrics {
		m := &e.Metrics[i]
		if len(m.Compare) == 0 {
			m.Compare = nil
		}
		if len(m.Thresholds) == 0 {
			m.Thresholds = nil
		}
		if len(m.Names) == 0 {
			m.Names = nil
		}
	}
	if err := e.Validate(); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// Subject is the subject a room's entry is announced on.
func Subject(bucket, room string) string { return "$KV." + bucket + "." + room }
