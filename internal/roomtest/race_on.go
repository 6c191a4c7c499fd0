//go:build race

package roomtest

// Race is true when the race detector is on: it slows a process down
// several times, so tests do not hold latency figures to their targets
// then (CI runs those tests once more without it).
const Race = true
