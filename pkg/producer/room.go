package producer

import (
	"time"

	"github.com/roomcast/roomcast/pkg/catalog"
)

// Room is one generated room (config.yaml's producer.rooms): what Run
// publishes and announces. Config decodes into it.
type Room struct {
	Room     string        `mapstructure:"room"`
	Title    string        `mapstructure:"title"`
	Interval time.Duration `mapstructure:"interval"`
	// Generator, when set, generates the whole room (GeneratorSalesDay,
	// GeneratorVisitorsDay) and Metrics stays empty.
	Generator string   `mapstructure:"generator"`
	Metrics   []Metric `mapstructure:"metrics"`
}

// Room generators: simulations of a shop's day, for the demo and the
// sample deployments.
const (
	GeneratorSalesDay    = "sales_day"
	GeneratorVisitorsDay = "visitors_day"
)

// Metric is one generated metric of a Room.
type Metric struct {
	Key       string  `mapstructure:"key"`
	Label     string  `mapstructure:"label"`
	Unit      string  `mapstructure:"unit"`
	Generator string  `mapstructure:"generator"` // uniform or walk
	Min       float64 `mapstructure:"min"`
	Max       float64 `mapstructure:"max"`
	Step      float64 `mapstructure:"step"` // walk: largest change per tick
	Decimals  int     `mapstructure:"decimals"`
}

// Entry is the catalogue entry of a room of metrics (a room with a
// Generator announces its own; see RoomEntry).
func (r Room) Entry() catalog.Entry {
	e := catalog.Entry{Room: r.Room, Title: catalog.Plain(r.Title), IntervalMS: r.Interval.Milliseconds(), Metrics: []catalog.Metric{}}
	if r.Title == "" {
		e.Title = catalog.Plain(r.Room)
	}
	for _, m := range r.Metrics {
		label := m.Label
		if label == "" {
			label = m.Key
		}
		e.Metrics = append(e.Metrics, catalog.Metric{Key: m.Key, Label: catalog.Plain(label), Unit: catalog.Plain(m.Unit)})
	}
	return e
}
