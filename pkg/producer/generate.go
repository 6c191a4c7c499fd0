package producer

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/roomcast/roomcast/pkg/catalog"
)

// Generator produces the successive values of one metric.
type Generator interface {
	Next() float64
}

// NewGenerator returns the generator a metric's config describes; the
// config must have been validated.
func NewGenerator(m Metric, rnd *rand.Rand) Generator {
	round := func(v float64) float64 {
		p := math.Pow(10, float64(m.Decimals))
		return math.Round(v*p) / p
	}
	if m.Generator == "walk" {
		step := m.Step
		if step == 0 {
			step = (m.Max - m.Min) / 20
		}
		return &walk{min: m.Min, max: m.Max, step: step, v: (m.Min + m.Max) / 2, rnd: rnd, round: round}
	}
	return &uniform{min: m.Min, max: m.Max, rnd: rnd, round: round}
}

type uniform struct {
	min, max float64
	rnd      *rand.Rand
	round    func(float64) float64
}

func (u *uniform) Next() float64 {
	return u.round(u.min + u.rnd.Float64()*(u.max-u.min))
}

type walk struct {
	min, max, step, v float64
	rnd               *rand.Rand
	round             func(float64) float64
}

func (w *walk) Next() float64 {
	w.v = math.Max(w.min, math.Min(w.max, w.v+(w.rnd.Float64()*2-1)*w.step))
	return w.round(w.v)
}

// Sample returns one generated update of room (without ts, which Publish
// adds): a value per metric and "timestamp" as HH:MM:SS.
func Sample(room Room, gens []Generator, now time.Time) map[string]any {
	out := make(map[string]any, len(gens)+1)
	for i, m := range room.Metrics {
		out[m.Key] = gens[i].Next()
	}
	out["timestamp"] = now.Format("15:04:05")
	return out
}

// Run feeds the generated rooms until ctx ends: each room announces its
// catalogue entry at once and every announceEvery, and publishes a sample
// every interval. It starts one goroutine per room and returns when all
// have ended. Publish errors are logged, at most once per room per minute.
func Run(ctx context.Context, p *Publisher, rooms []Room, announceEvery time.Duration, log *slog.Logger) {
	RunFrom(ctx, p, rooms, announceEvery, 0, log)
}

// maxBackfill bounds the samples a room backfills: fewer than the
// default history.depth (100), so that live updates still fit beside them.
const maxBackfill = 90

// RunFrom is Run that first publishes the last backfill of each room's
// generated data, up to maxBackfill samples spread over it, each with the
// "ts" of the moment it stands for: a demo started a second ago already
// has a chart's window of history (which a dashboard's join asks for).
// For generated data only: a real source has no past to make up.
func RunFrom(ctx context.Context, p *Publisher, rooms []Room, announceEvery, backfill time.Duration, log *slog.Logger) {
	var wg sync.WaitGroup
	for _, room := range rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runRoom(ctx, p, room, announceEvery, backfill, log.With("room", room.Room))
		}()
	}
	wg.Wait()
}

// source is what a generated room announces and publishes.
type source interface {
	Entry() catalog.Entry
	Sample(now time.Time) map[string]any
}

// metricsSource generates each metric of the room on its own.
type metricsSource struct {
	room Room
	gens []Generator
}

func (m *metricsSource) Entry() catalog.Entry                { return m.room.Entry() }
func (m *metricsSource) Sample(now time.Time) map[string]any { return Sample(m.room, m.gens, now) }

// newSource returns the room's generator: a whole simulated room for a
// room-level generator, else one generator per metric.
func newSource(room Room, rnd *rand.Rand) source {
	switch room.Generator {
	case GeneratorSalesDay:
		return newSalesDay(room, rnd)
	case GeneratorVisitorsDay:
		return &visitorsDay{room: room, rnd: rnd}
	}
	gens := make([]Generator, len(room.Metrics))
	for i, m := range room.Metrics {
		gens[i] = NewGenerator(m, rnd)
	}
	return &metricsSource{room: room, gens: gens}
}

// RoomEntry returns the catalogue entry a generated room announces.
func RoomEntry(room Room) catalog.Entry {
	return newSource(room, rand.New(rand.NewPCG(1, 2))).Entry()
}

func runRoom(ctx context.Context, p *Publisher, room Room, announceEvery, backfill time.Duration, log *slog.Logger) {
	src := newSource(room, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	var lastErrLog time.Time
	report := func(what string, err error) {
		if err != nil && time.Since(lastErrLog) > time.Minute {
			lastErrLog = time.Now()
			log.Warn("producer "+what+" failed", "err", err)
		}
	}
	announceOnce := func() {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		report("announce", p.Announce(actx, src.Entry()))
	}
	announceOnce()
	if backfill > 0 {
		step := max(room.Interval, backfill/maxBackfill)
		now := time.Now()
		for t := now.Add(-backfill); t.Before(now) && ctx.Err() == nil; t = t.Add(step) {
			sample := src.Sample(t)
			sample["ts"] = t.UnixMilli()
			report("publish", p.Publish(room.Room, sample))
		}
	}
	publish := time.NewTicker(room.Interval)
	defer publish.Stop()
	announce := time.NewTicker(announceEvery)
	defer announce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-publish.C:
			report("publish", p.Publish(room.Room, src.Sample(now)))
		case <-announce.C:
			announceOnce()
		}
	}
}
