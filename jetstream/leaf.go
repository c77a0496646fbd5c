package jetstream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// LeafRemote joins the embedded server to a hub as a leaf node
// (ServerConfig.Leaf). It works without a client listener: the leaf dials
// the hub, and nats-server solicits leaf remotes before it would wait for a
// listener (checked on v2.15.3).
type LeafRemote struct {
	// URLs of the hub's leaf-node listeners. Required.
	URLs []*url.URL
	// Credentials is a NATS credentials file. Optional.
	Credentials string
	// TLS, if set, secures the connection.
	TLS *tls.Config
	// Deny are the subjects that must not cross the connection, either way:
	// the event and dead-letter subjects. Without them nats-server forwards
	// core messages across domains (a stream of another leaf on the same
	// subjects stored this one's events).
	Deny []string
	// ReconnectInterval is how often a lost hub is dialed again. Zero: 1s.
	ReconnectInterval time.Duration
}

// applyLeaf sets opts for a leaf of domain on the hub r.
func applyLeaf(opts *server.Options, domain string, r *LeafRemote) error {
	if domain == "" {
		return errors.New("jetstream: a leaf needs a JetStream domain of its own (ServerConfig.Domain)")
	}
	if len(r.URLs) == 0 {
		return errors.New("jetstream: LeafRemote.URLs is empty")
	}
	remote := &server.RemoteLeafOpts{
		// The streams and every user are in the global account: it is the
		// one the leaf connection binds to.
		LocalAccount: server.DEFAULT_GLOBAL_ACCOUNT,
		URLs:         r.URLs,
		Credentials:  r.Credentials,
		DenyImports:  r.Deny,
		DenyExports:  r.Deny,
	}
	if r.TLS != nil {
		remote.TLS, remote.TLSConfig = true, r.TLS.Clone()
	}
	opts.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
	opts.LeafNode.ReconnectInterval = r.ReconnectInterval
	if opts.LeafNode.ReconnectInterval == 0 {
		opts.LeafNode.ReconnectInterval = time.Second
	}
	return nil
}

// LeafConnected reports whether the server has a live leaf connection to
// its hub.
func (s *Server) LeafConnected() bool { return s.srv.NumLeafNodes() > 0 }

// LeafError is what the server last said about its leaf connection when it
// could not keep it ("" when none): a refused login, a hub that is
// unreachable.
func (s *Server) LeafError() string {
	s.leafMu.Lock()
	defer s.leafMu.Unlock()
	return s.leafErr
}

// noteLeafLog keeps the last leaf-connection error nats-server logged.
func (s *Server) noteLeafLog(msg string) {
	s.leafMu.Lock()
	s.leafErr = msg
	s.leafMu.Unlock()
}

// CutLeaf closes the leaf connection and keeps it closed until the server
// restarts (the remote is disabled by a configuration reload): for a leaf
// that must not be part of the hub, such as one whose domain another leaf
// already has.
func (s *Server) CutLeaf() error {
	if s.opts == nil || len(s.opts.LeafNode.Remotes) == 0 {
		return nil
	}
	o := s.opts.Clone()
	for _, r := range o.LeafNode.Remotes {
		r.Disabled = true
	}
	if err := s.srv.ReloadOptions(o); err != nil {
		return fmt.Errorf("jetstream: cut the leaf connection: %w", err)
	}
	return nil
}
