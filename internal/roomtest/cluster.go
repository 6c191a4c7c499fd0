package roomtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a NATS cluster of in-process servers with JetStream, each
// with its own store directory, on fixed random ports so that a node can
// be stopped and started again where it was.
type Cluster struct {
	t       testing.TB
	Servers []*server.Server
	opts    []server.Options
}

// StartCluster starts an n-node cluster and waits until JetStream has a
// meta leader. Nodes are shut down when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	routes := make([]string, n)
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i] = FreePort(t), FreePort(t)
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i])
	}
	for i := range n {
		c.opts = append(c.opts, server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Cluster:    server.ClusterOpts{Name: "roomcast-test", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		})
	}
	c.Servers = make([]*server.Server, n)
	for i := range n {
		c.Start(i)
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			if s != nil {
				s.Shutdown()
				s.WaitForShutdown()
			}
		}
	})
	c.WaitJetStream()
	return c
}

// Start starts node i (again), on its ports and with its store.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	opts := c.opts[i]
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(&opts)
	if err != nil {
		c.t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("node %d not ready", i)
	}
	c.Servers[i] = s
}

// Stop shuts node i down.
func (c *Cluster) Stop(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
	c.Servers[i] = nil
}

// Index returns the node named name (a server name as NATS reports it).
func (c *Cluster) Index(name string) int {
	for i, o := range c.opts {
		if o.ServerName == name {
			return i
		}
	}
	return -1
}

// URL is the client URL of node i. A client given one node learns the
// others from it (cluster discovery) and can fail over to them.
func (c *Cluster) URL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port) }

// URLs is the client URL list of all nodes.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.opts))
	for i, o := range c.opts {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return strings.Join(urls, ",")
}

// WaitJetStream waits until the running nodes agree on a JetStream meta
// leader.
func (c *Cluster) WaitJetStream() {
	c.t.Helper()
	Eventually(c.t, 30*time.Second, func() error {
		for i, s := range c.Servers {
			if s == nil {
				continue
			}
			if !s.JetStreamIsClustered() || s.JetStreamIsLeader() || s.JetStreamIsCurrent() {
				continue
			}
			return fmt.Errorf("node %d: JetStream not current", i)
		}
		for _, s := range c.Servers {
			if s != nil && s.JetStreamIsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no JetStream meta leader")
	})
}
