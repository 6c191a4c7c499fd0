//go:build race

package hub

// raceOn: the race detector slows everything several times; latency
// targets are not held then (CI runs those tests once more without it).
const raceOn = true
