package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config is one run. The coordinator sends it to its worker processes as
// JSON, so every field is exported and plain.
type Config struct {
	Workload     string        `json:"workload"`
	Addr         string        `json:"addr"`           // gateway (or rawserver) host:port
	Raw          bool          `json:"raw"`            // plain TCP to `loadgen rawserver` instead of WebSocket /ws
	SocketIO     string        `json:"socketio"`       // "websocket" or "polling": Socket.IO clients on /socket.io/ instead of /ws
	NATS         string        `json:"nats"`           // NATS URL the producer publishes to
	Prefix       string        `json:"prefix"`         // subject prefix: <prefix>.<room>
	Conns        int           `json:"conns"`          // connections
	Rooms        int           `json:"rooms"`          // rooms r0..r<rooms-1>
	RoomsPerConn int           `json:"rooms_per_conn"` // rooms each connection stays in
	Hz           float64       `json:"hz"`             // updates per second per room
	Stagger      bool          `json:"stagger"`        // rooms published evenly over 1/hz, not all in one tick
	Duration     time.Duration `json:"duration"`       // measured window
	Warmup       time.Duration `json:"warmup"`         // after all are connected, before the window
	Settle       time.Duration `json:"settle"`         // after all are connected, before reading the server's RSS
	Churn        bool          `json:"churn"`          // each connection loops join/leave (W4)
	ChurnRate    float64       `json:"churn_rate"`     // per connection ops/s cap in churn; 0 = as fast as acks come back
	Reconnect    float64       `json:"reconnect"`      // fraction of connections reconnecting per minute (W5)
	Sample       time.Duration `json:"sample"`         // server RSS/goroutine sampling interval; 0 = off
	DialParallel int           `json:"dial_parallel"`  // dials in flight at once
	Ramp         float64       `json:"ramp"`           // new connections per second; 0 = no pacing
	Workers      int           `json:"workers"`        // client processes; 0 = one per conns_per_worker
	PerWorker    int           `json:"conns_per_worker"`
	SourceIPs    int           `json:"source_ips"` // spread over 127.0.0.2..; 0 = only when conns need it
	PID          int           `json:"pid"`        // server process to account (gateway or rawserver)
	Metrics      string        `json:"metrics"`    // server /metrics URL; "" = derived from addr, "-" = none
	Baseline     float64       `json:"baseline"`   // raw server CPU µs per delivery to compare with
	Floor        float64       `json:"floor"`      // floor CPU µs per delivery (per op in churn) to compare with
	FloorRun     string        `json:"-"`          // a floor run's output: compare CPU and RSS with its result
	Payload      int           `json:"payload"`    // approximate update payload size in bytes
	Timeout      time.Duration `json:"timeout"`    // for dialing and for each join's reply
	Quiet        bool          `json:"quiet"`      // only the JSON line
	CPUProfile   string        `json:"-"`          // write this process's CPU profile of the window here

	floorResult *Result // read from FloorRun by parseFlags
}

func defaults() Config {
	return Config{
		Workload: "custom", Addr: "127.0.0.1:8080", NATS: "nats://127.0.0.1:4222", Prefix: "roomcast.room",
		Conns: 100, Rooms: 4, RoomsPerConn: 1, Hz: 5, Duration: 10 * time.Second, Warmup: 3 * time.Second,
		Settle: 2 * time.Second, DialParallel: 64, Ramp: 2000, PerWorker: 15000, Payload: 100,
		Timeout: 15 * time.Second,
	}
}

// presets are the workloads of issue 6; flags given on the command line
// override them.
var presets = map[string]func(*Config){
	"W1": func(c *Config) { // idle: RSS per connection
		c.Conns, c.Rooms, c.RoomsPerConn, c.Hz, c.Duration, c.Warmup, c.Settle = 15000, 20, 1, 0, 10*time.Second, 0, 5*time.Second
	},
	"W2": func(c *Config) { // throughput
		c.Conns, c.Rooms, c.RoomsPerConn, c.Hz, c.Duration, c.Warmup = 10000, 20, 4, 5, 30*time.Second, 5*time.Second
	},
	"W3": func(c *Config) { // latency: independent producers, rooms staggered over the interval
		c.Conns, c.Rooms, c.RoomsPerConn, c.Hz, c.Duration, c.Warmup = 10000, 10, 1, 5, 30*time.Second, 5*time.Second
		c.Stagger = true
	},
	"W3T": func(c *Config) { // W3 with one producer: every room in the same tick (what W3 was before 2026-12-01)
		c.Conns, c.Rooms, c.RoomsPerConn, c.Hz, c.Duration, c.Warmup = 10000, 10, 1, 5, 30*time.Second, 5*time.Second
	},
	"W4": func(c *Config) { // churn; 1 Hz keeps every room's latest update known, as on a live dashboard
		c.Conns, c.Rooms, c.RoomsPerConn, c.Hz, c.Duration, c.Warmup, c.Churn = 5000, 20, 0, 1, 30*time.Second, 5*time.Second, true
		// Under the gateway's default limits.commands_per_second (20):
		// 5,000 connections can still offer 80,000 ops/s.
		c.ChurnRate = 16
		c.Sample = 500 * time.Millisecond
	},
	"W5": func(c *Config) { // soak
		c.Conns, c.Rooms, c.RoomsPerConn, c.Hz, c.Duration, c.Warmup = 10000, 20, 1, 1, 30*time.Minute, 10*time.Second
		c.Reconnect, c.Sample = 0.2, 10*time.Second
	},
	"quick": func(c *Config) { // smoke run
		c.Conns, c.Rooms, c.RoomsPerConn, c.Hz, c.Duration, c.Warmup, c.Settle = 50, 2, 1, 10, 2*time.Second, time.Second, 0
	},
}

// parseFlags reads the command line: the workload preset first, then
// every flag given explicitly on top of it.
func parseFlags(args []string) (Config, error) {
	c := defaults()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	workload := fs.String("workload", "", "preset: W1 (idle), W2 (throughput), W3 (latency, rooms staggered), W3T (W3 with all rooms in one tick), W4 (churn), W5 (soak), quick (smoke)")
	quick := fs.Bool("quick", false, "same as --workload quick")
	fs.StringVar(&c.Addr, "addr", c.Addr, "gateway host:port (its /ws), or the rawserver's with --raw")
	fs.BoolVar(&c.Raw, "raw", c.Raw, "connect with plain TCP to the raw server (loadgen rawserver), the raw socket baseline")
	fs.StringVar(&c.SocketIO, "socketio", c.SocketIO, "websocket or polling: Socket.IO v5 clients (Engine.IO v4 over that transport) on /socket.io/ instead of /ws")
	fs.StringVar(&c.NATS, "nats", c.NATS, "NATS URL to publish the updates to")
	fs.StringVar(&c.Prefix, "prefix", c.Prefix, "subject prefix: updates go to <prefix>.<room>")
	fs.IntVar(&c.Conns, "conns", c.Conns, "connections")
	fs.IntVar(&c.Rooms, "rooms", c.Rooms, "rooms, named r0, r1, …")
	fs.IntVar(&c.RoomsPerConn, "rooms-per-conn", c.RoomsPerConn, "rooms each connection joins and stays in")
	fs.Float64Var(&c.Hz, "hz", c.Hz, "updates per second per room; 0 = no traffic")
	fs.BoolVar(&c.Stagger, "stagger", c.Stagger, "publish the rooms evenly spread over 1/hz instead of all in one tick")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "measured window")
	fs.DurationVar(&c.Warmup, "warmup", c.Warmup, "time between all connected and the window")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "time between all connected and reading the server's RSS")
	fs.BoolVar(&c.Churn, "churn", c.Churn, "each connection loops join/leave of rooms (W4)")
	fs.Float64Var(&c.ChurnRate, "churn-rate", c.ChurnRate, "cap on join+leave ops/s per connection in churn; 0 = as fast as replies come")
	fs.Float64Var(&c.Reconnect, "reconnect", c.Reconnect, "fraction of the connections that reconnect (and resume) each minute")
	fs.DurationVar(&c.Sample, "sample", c.Sample, "sample the server's RSS, goroutines and NATS subscriptions this often; 0 = off")
	fs.IntVar(&c.DialParallel, "dial-parallel", c.DialParallel, "dials in flight at once")
	fs.Float64Var(&c.Ramp, "ramp", c.Ramp, "new connections per second (over all workers); 0 = as fast as dial-parallel allows")
	fs.IntVar(&c.Workers, "workers", c.Workers, "client processes; 0 = enough for conns-per-worker (1 runs in this process)")
	fs.IntVar(&c.PerWorker, "conns-per-worker", c.PerWorker, "connections per client process (a process may hold 20,000 files)")
	fs.IntVar(&c.SourceIPs, "source-ips", c.SourceIPs, "spread connections over source addresses 127.0.0.2..; 0 = only when conns exceed one address's ports")
	fs.IntVar(&c.PID, "pid", c.PID, "server process id (gateway or rawserver): report its CPU per delivery and RSS per connection")
	fs.IntVar(&c.PID, "gateway-pid", c.PID, "same as --pid")
	fs.StringVar(&c.Metrics, "metrics", c.Metrics, "server /metrics URL; default http://<addr>/metrics for a gateway; - for none")
	fs.Float64Var(&c.Baseline, "baseline", c.Baseline, "raw server CPU µs per delivery from a --raw run: report the ratio to it")
	fs.Float64Var(&c.Floor, "floor", c.Floor, "floor CPU µs per delivery (per op with --churn) from a run against loadgen floor: report the ratio to it")
	fs.StringVar(&c.FloorRun, "floor-run", c.FloorRun, "output (or JSON line) of the same workload against loadgen floor: report CPU and RSS as ratios to it")
	fs.IntVar(&c.Payload, "payload", c.Payload, "approximate update payload size in bytes")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "timeout for a dial and for each join's reply")
	fs.BoolVar(&c.Quiet, "quiet", c.Quiet, "print only the JSON line")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the load tool's CPU profile of the window to this file (its connections only with one process)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *quick && *workload == "" {
		*workload = "quick"
	}
	if *workload != "" {
		p, ok := presets[strings.ToUpper(*workload)]
		if !ok {
			p, ok = presets[*workload]
		}
		if !ok {
			return c, fmt.Errorf("unknown workload %q (W1..W5, W3T, quick)", *workload)
		}
		// Re-apply: preset on the defaults, then the flags that were set.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		explicit := c
		c = defaults()
		p(&c)
		c.Workload = strings.ToUpper(*workload)
		if *workload == "quick" {
			c.Workload = "quick"
		}
		overlay(&c, explicit, set)
	}
	if c.FloorRun != "" {
		fr, err := readFloorRun(c.FloorRun)
		if err != nil {
			return c, err
		}
		c.floorResult = fr
	}
	return c, c.check()
}

// overlay copies the explicitly set flags from src into dst.
func overlay(dst *Config, src Config, set map[string]bool) {
	for name := range set {
		switch name {
		case "addr":
			dst.Addr = src.Addr
		case "raw":
			dst.Raw = src.Raw
		case "socketio":
			dst.SocketIO = src.SocketIO
		case "nats":
			dst.NATS = src.NATS
		case "prefix":
			dst.Prefix = src.Prefix
		case "conns":
			dst.Conns = src.Conns
		case "rooms":
			dst.Rooms = src.Rooms
		case "rooms-per-conn":
			dst.RoomsPerConn = src.RoomsPerConn
		case "hz":
			dst.Hz = src.Hz
		case "stagger":
			dst.Stagger = src.Stagger
		case "duration":
			dst.Duration = src.Duration
		case "warmup":
			dst.Warmup = src.Warmup
		case "settle":
			dst.Settle = src.Settle
		case "churn":
			dst.Churn = src.Churn
		case "churn-rate":
			dst.ChurnRate = src.ChurnRate
		case "reconnect":
			dst.Reconnect = src.Reconnect
		case "sample":
			dst.Sample = src.Sample
		case "dial-parallel":
			dst.DialParallel = src.DialParallel
		case "ramp":
			dst.Ramp = src.Ramp
		case "workers":
			dst.Workers = src.Workers
		case "conns-per-worker":
			dst.PerWorker = src.PerWorker
		case "source-ips":
			dst.SourceIPs = src.SourceIPs
		case "pid", "gateway-pid":
			dst.PID = src.PID
		case "metrics":
			dst.Metrics = src.Metrics
		case "baseline":
			dst.Baseline = src.Baseline
		case "floor":
			dst.Floor = src.Floor
		case "floor-run":
			dst.FloorRun = src.FloorRun
		case "payload":
			dst.Payload = src.Payload
		case "timeout":
			dst.Timeout = src.Timeout
		case "quiet":
			dst.Quiet = src.Quiet
		case "cpuprofile":
			dst.CPUProfile = src.CPUProfile
		}
	}
}

func (c *Config) check() error {
	switch {
	case c.Conns <= 0:
		return fmt.Errorf("--conns must be positive")
	case c.Rooms <= 0:
		return fmt.Errorf("--rooms must be positive")
	case c.RoomsPerConn < 0 || c.RoomsPerConn > c.Rooms:
		return fmt.Errorf("--rooms-per-conn must be between 0 and --rooms")
	case c.Churn && c.RoomsPerConn == c.Rooms:
		return fmt.Errorf("--churn needs rooms a connection is not in: lower --rooms-per-conn")
	case c.Hz < 0 || c.Reconnect < 0 || c.Reconnect > 1:
		return fmt.Errorf("--hz must be >= 0 and --reconnect in [0, 1]")
	case c.DialParallel <= 0 || c.PerWorker <= 0:
		return fmt.Errorf("--dial-parallel and --conns-per-worker must be positive")
	case c.SocketIO != "" && c.SocketIO != "websocket" && c.SocketIO != "polling":
		return fmt.Errorf("--socketio must be websocket or polling")
	case c.SocketIO != "" && c.Raw:
		return fmt.Errorf("--socketio and --raw exclude each other")
	}
	return nil
}

// roomOf returns the index of connection conn's j-th room: consecutive
// connections take consecutive rooms, so every room gets the same number
// of members.
func (c *Config) roomOf(conn, j int) int { return (conn*c.RoomsPerConn + j) % c.Rooms }

// members returns how many connections are in each room.
func (c *Config) members() []int {
	m := make([]int, c.Rooms)
	for i := range c.Conns {
		for j := range c.RoomsPerConn {
			m[c.roomOf(i, j)]++
		}
	}
	return m
}

func roomName(i int) string { return "r" + strconv.Itoa(i) }

func (c *Config) workers() int {
	if c.Workers > 0 {
		return c.Workers
	}
	return (c.Conns + c.PerWorker - 1) / c.PerWorker
}

// portsPerIP is how many connections one source address takes: the
// ephemeral port range 32768-60999 less a margin.
const portsPerIP = 25000

func (c *Config) sourceIPs() int {
	if c.SourceIPs > 0 {
		return c.SourceIPs
	}
	if c.Conns <= portsPerIP {
		return 0
	}
	return (c.Conns + portsPerIP - 1) / portsPerIP
}
