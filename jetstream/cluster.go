package jetstream

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterRoutes makes the embedded server a node of a cluster joined by
// routes (ServerConfig.Cluster).
type ClusterRoutes struct {
	Name   string   // the cluster's name, the same on every node
	Listen string   // host:port to accept routes on
	Routes []string // nats-route://host:port of every node (its own is ignored)
}

// applyCluster sets opts for a cluster node. A node needs a client
// listener: with DontListen nats-server's Start waits for a client
// listener that never comes (StartRouting waits on clientListenReady,
// closed by the accept loop DontListen skips), so the server never becomes
// ready and its Shutdown hangs (nats-server#5174; seen on v2.15.3).
func applyCluster(opts *server.Options, c *ClusterRoutes) error {
	if opts.DontListen {
		return errors.New("jetstream: a cluster node needs a client listener (ServerConfig.Listen): without one nats-server never becomes ready and its shutdown hangs (nats-server#5174)")
	}
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("jetstream: cluster listen address %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("jetstream: cluster listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return fmt.Errorf("jetstream: route %q is not a nats-route://host:port URL", r)
		}
		opts.Routes = append(opts.Routes, u)
	}
	if len(opts.Routes) == 0 {
		return errors.New("jetstream: a cluster node needs routes: nats-server clusters JetStream only with routes configured")
	}
	return nil
}
