// Package hub runs a NATS cluster of real nats-servers on loopback: the hub
// that Boxcar binaries join as leaf nodes, or connect to as instances of a
// shared cluster. Tests, the bench and cmd/devhub use it; in production the
// hub is a NATS cluster the operator runs (the README shows its
// configuration).
//
// Every node listens on 127.0.0.1 for clients, routes and leaf nodes, with
// JetStream in one domain, no authentication, and its store under Dir. A
// node can be stopped and started again on the same ports and store: a
// *server.Server cannot restart (nats-server#4789), so a restart is a new
// server on the old options.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a hub.
type Config struct {
	// Dir holds a store directory per node (Dir/n1, Dir/n2, ...). Required.
	Dir string
	// Nodes is the number of servers. Default 3.
	Nodes int
	// Name is the cluster's name. Default "hub".
	Name string
	// Domain is the hub's JetStream domain: leaf nodes reach its API as
	// $JS.<Domain>.API. Default "hub".
	Domain string
	// Ports, if set, are the first of three consecutive port ranges: node i
	// (from 0) listens for clients on Ports+i, routes on Ports+100+i and
	// leaf nodes on Ports+200+i. Default 0: free ports picked at start.
	Ports int
	// Logger receives the servers' warnings and errors. Default: discard.
	Logger *slog.Logger
}

// Cluster is a running hub.
type Cluster struct {
	cfg   Config
	mu    sync.Mutex
	nodes []*node
}

type node struct {
	opts *server.Options
	srv  *server.Server // nil while stopped
}

// Start starts cfg.Nodes servers with routes to each other and waits until
// JetStream has a meta leader (at most ctx's deadline).
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("hub: Config.Dir is empty")
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Name == "" {
		cfg.Name = "hub"
	}
	if cfg.Domain == "" {
		cfg.Domain = "hub"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ports := make([][3]int, cfg.Nodes)
	if cfg.Ports > 0 {
		for i := range ports {
			ports[i] = [3]int{cfg.Ports + i, cfg.Ports + 100 + i, cfg.Ports + 200 + i}
		}
	} else {
		free, err := freePorts(3 * cfg.Nodes)
		if err != nil {
			return nil, err
		}
		for i := range ports {
			ports[i] = [3]int{free[3*i], free[3*i+1], free[3*i+2]}
		}
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p[1])})
	}
	c := &Cluster{cfg: cfg}
	for i, p := range ports {
		opts := &server.Options{
			ServerName:      fmt.Sprintf("%s-n%d", cfg.Name, i+1),
			Host:            "127.0.0.1",
			Port:            p[0],
			NoSigs:          true,
			JetStream:       true,
			JetStreamDomain: cfg.Domain,
			StoreDir:        filepath.Join(cfg.Dir, fmt.Sprintf("n%d", i+1)),
			Cluster:         server.ClusterOpts{Name: cfg.Name, Host: "127.0.0.1", Port: p[1]},
			Routes:          routes,
			LeafNode:        server.LeafNodeOpts{Host: "127.0.0.1", Port: p[2]},
			// A hub on a shared machine: keep the servers' memory modest.
			JetStreamMaxMemory: 64 << 20,
		}
		c.nodes = append(c.nodes, &node{opts: opts})
	}
	for i := range c.nodes {
		if err := c.startNode(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	for i := range c.nodes {
		if !c.nodes[i].srv.ReadyForConnections(10 * time.Second) {
			c.Shutdown()
			return nil, fmt.Errorf("hub: node %d not ready in 10s", i+1)
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// freePorts reserves n free loopback ports (and frees them: a race with
// other processes is possible, and unlikely).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("hub: reserve a port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) startNode(i int) error {
	n := c.nodes[i]
	srv, err := server.NewServer(n.opts)
	if err != nil {
		return fmt.Errorf("hub: node %d: %w", i+1, err)
	}
	srv.SetLoggerV2(&logger{l: c.cfg.Logger.With("node", n.opts.ServerName)}, false, false, false)
	go srv.Start() // Start waits for the routes' listeners of the others
	n.srv = srv
	return nil
}

// WaitReady waits until every running node is ready for clients and
// answers JetStream requests (the meta group has a leader).
func (c *Cluster) WaitReady(ctx context.Context) error {
	c.mu.Lock()
	var srvs []*server.Server
	for _, n := range c.nodes {
		if n.srv != nil {
			srvs = append(srvs, n.srv)
		}
	}
	c.mu.Unlock()
	for _, s := range srvs {
		for !s.ReadyForConnections(100 * time.Millisecond) {
			if ctx.Err() != nil {
				return fmt.Errorf("hub: %s not ready: %w", s.Name(), ctx.Err())
			}
		}
	}
	// The meta leader must know every running node as a live peer (else
	// an R3 stream finds "no suitable peers for placement"), and every
	// running node must answer JetStream requests: a client may connect
	// to any of them.
	for !c.peersKnown(srvs) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("hub: the JetStream meta leader does not know every node: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, s := range srvs {
		for c.pingJS(ctx, s) != nil {
			select {
			case <-ctx.Done():
				return fmt.Errorf("hub: %s: JetStream does not answer: %w", s.Name(), ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// peersKnown reports whether a node leads the JetStream meta group and
// sees every node of srvs as a live peer.
func (c *Cluster) peersKnown(srvs []*server.Server) bool {
	for _, s := range srvs {
		if s.JetStreamIsLeader() {
			return len(s.JetStreamClusterPeers()) >= len(srvs)
		}
	}
	return false
}

func (c *Cluster) pingJS(ctx context.Context, s *server.Server) error {
	nc, err := nats.Connect(s.ClientURL(), nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// Domain is the hub's JetStream domain.
func (c *Cluster) Domain() string { return c.cfg.Domain }

// Nodes is the number of servers (running or not).
func (c *Cluster) Nodes() int { return len(c.nodes) }

// ClientURLs are the client URLs of every node, running or not.
func (c *Cluster) ClientURLs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port))
	}
	return out
}

// LeafURLs are the leaf-node URLs of every node, running or not.
func (c *Cluster) LeafURLs() []*url.URL {
	var out []*url.URL
	for _, n := range c.nodes {
		out = append(out, &url.URL{Scheme: "nats-leaf", Host: fmt.Sprintf("127.0.0.1:%d", n.opts.LeafNode.Port)})
	}
	return out
}

// Server is node i's server (nil while stopped).
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Stop stops node i, as a crash would: at once, without lame-duck mode.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts node i again, on its ports and store, and waits until it
// is ready for clients.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i].srv != nil {
		return nil
	}
	if err := c.startNode(i); err != nil {
		return err
	}
	if !c.nodes[i].srv.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("hub: node %d not ready in 10s after restart", i+1)
	}
	return nil
}

// StopAll stops every node: the hub is away.
func (c *Cluster) StopAll() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() { c.Stop(i) })
	}
	wg.Wait()
}

// RestartAll starts every stopped node and waits for the hub to be ready.
func (c *Cluster) RestartAll(ctx context.Context) error {
	for i := range c.nodes {
		c.mu.Lock()
		stopped := c.nodes[i].srv == nil
		if stopped {
			if err := c.startNode(i); err != nil {
				c.mu.Unlock()
				return err
			}
		}
		c.mu.Unlock()
	}
	return c.WaitReady(ctx)
}

// StreamLeader returns the index of the node leading stream (in the
// global account), or -1 if none does right now.
func (c *Cluster) StreamLeader(stream string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.nodes {
		if n.srv != nil && n.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() { c.StopAll() }

// logger forwards the servers' warnings and errors to slog.
type logger struct{ l *slog.Logger }

func (l *logger) Noticef(format string, v ...any) {}
func (l *logger) Warnf(format string, v ...any)   { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l *logger) Fatalf(format string, v ...any)  { l.l.Error("fatal: " + fmt.Sprintf(format, v...)) }
func (l *logger) Errorf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l *logger) Debugf(format string, v ...any)  {}
func (l *logger) Tracef(format string, v ...any)  {}
