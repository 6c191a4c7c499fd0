package catalog

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/roomcast/roomcast/pkg/protocol"
)

// A Screen is a named wall screen: its title, and which rooms' panels it
// shows, in what order and how large, on a grid of Columns columns. The
// dashboard shows it at /?screen=<name>. Screens come from the gateway's
// config (dashboard.screens) or from the catalogue bucket under the key
// screen.<name>; a configured screen wins over a stored one of the same
// name.
type Screen struct {
	Name    string        `json:"name" mapstructure:"name"`
	Title   Text          `json:"title,omitempty" mapstructure:"-"`
	Columns int           `json:"columns,omitempty" mapstructure:"columns"`
	Panels  []ScreenPanel `json:"panels" mapstructure:"panels"`
}

// ScreenPanel is one room's panel on a screen.
type ScreenPanel struct {
	Room string `json:"room" mapstructure:"room"`
	// Metrics are the metric keys to show, in this order; empty shows all
	// of the room's metrics in catalogue order.
	Metrics []string `json:"metrics,omitempty" mapstructure:"metrics"`
	// W and H are the panel's span in grid cells (default 1 × 1).
	W int `json:"w,omitempty" mapstructure:"w"`
	H int `json:"h,omitempty" mapstructure:"h"`
}

// Limits on a screen.
const (
	MaxScreenPanels  = 32
	MaxScreenColumns = 12
)

var screenName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ScreenKeyPrefix starts the catalogue bucket keys of screens. A room name
// cannot contain a dot, so a screen's key can never be a room's.
const ScreenKeyPrefix = "screen."

// Validate checks a screen; the error names the offending field.
func (s *Screen) Validate() error {
	if !screenName.MatchString(s.Name) {
		return fmt.Errorf("name: %q must be 1 to 64 of A-Z, a-z, 0-9, _ and -", s.Name)
	}
	if err := s.Title.check("title", false); err != nil {
		return err
	}
	if s.Columns < 0 || s.Columns > MaxScreenColumns {
		return fmt.Errorf("columns: must be 0 (automatic) to %d", MaxScreenColumns)
	}
	if len(s.Panels) == 0 || len(s.Panels) > MaxScreenPanels {
		return fmt.Errorf("panels: 1 to %d panels, got %d", MaxScreenPanels, len(s.Panels))
	}
	for i, p := range s.Panels {
		f := fmt.Sprintf("panels[%d]", i)
		if err := protocol.CheckRoom(p.Room); err != nil {
			return fmt.Errorf("%s.room: %w", f, err)
		}
		if p.W < 0 || p.W > MaxScreenColumns || p.H < 0 || p.H > MaxScreenColumns {
			return fmt.Errorf("%s: w and h must be 0 to %d", f, MaxScreenColumns)
		}
		if len(p.Metrics) > MaxMetrics {
			return fmt.Errorf("%s.metrics: more than %d", f, MaxMetrics)
		}
		for j, k := range p.Metrics {
			if err := checkText(fmt.Sprintf("%s.metrics[%d]", f, j), k, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// ParseScreen decodes and validates the screen stored under key
// screen.<name>.
func ParseScreen(key string, data []byte) (Screen, error) {
	name := strings.TrimPrefix(key, ScreenKeyPrefix)
	if len(data) > MaxEntryBytes {
		return Screen{}, fmt.Errorf("screen is %d bytes, the limit is %d", len(data), MaxEntryBytes)
	}
	var s Screen
	if err := json.Unmarshal(data, &s); err != nil {
		return Screen{}, fmt.Errorf("screen is not a JSON object of the screen shape: %w", err)
	}
	if s.Name == "" {
		s.Name = name
	}
	if s.Name != name {
		return Screen{}, fmt.Errorf("name: screen names %q but was stored as %q", s.Name, key)
	}
	if err := s.Validate(); err != nil {
		return Screen{}, err
	}
	return s, nil
}
