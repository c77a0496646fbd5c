package boxcar

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Topologies (the README's "From one binary to a cluster"):
//
//   - single: one binary, its embedded server, its own stream. The default.
//   - leaf: each binary keeps its embedded server, outbox and stream, and
//     joins a hub cluster as a leaf node with a JetStream domain of its own
//     (Config.Leaf). The hub sources every binary's stream into one
//     aggregate; subscribers consume the aggregate.
//   - shared: instances share one replicated stream on a cluster, through
//     Config.NATSURL (an embedded node, Config.Cluster, is refused: not
//     supported yet); each publishes on
//     its own subtree, chained per instance.
type topology string

const (
	topologySingle topology = "single"
	topologyLeaf   topology = "leaf"
	topologyShared topology = "shared"
)

func (c Config) topology() topology {
	switch {
	case c.Leaf != nil:
		return topologyLeaf
	case c.NATSURL != "" || c.Cluster != nil:
		return topologyShared
	}
	return topologySingle
}

// Defaults of LeafConfig.
const (
	DefaultHubDomain      = "hub"
	DefaultHubReplicas    = 3
	DefaultHubStreamSufix = "_ALL"
)

// LeafConfig joins the embedded server to a hub as a leaf node (Config.Leaf).
//
// The embedded server keeps no listener: it dials the hub. Its JetStream
// domain is Config.InstanceID, so its stream stays its own; the leaf
// connection denies the event and dead-letter subjects both ways, so that
// no event of another binary enters this one's stream (without the deny
// rules, nats-server lets them through: a second leaf's stream stored every
// event of the first, and its relay's chain broke). The hub reaches this
// binary's stream through $JS.<InstanceID>.API and sources it into the
// aggregate HubStream: the binary adds itself as a source when it connects,
// and checks that it still is every little while. Subscribers of this bus
// consume HubStream, in the hub's domain: the events of every binary.
//
// While the hub is unreachable the binary publishes into its own stream
// (store and forward), and the hub catches up from it when the link is
// back; its subscribers wait. Health shows the link and the source lag.
type LeafConfig struct {
	// URLs are the hub's leaf-node listeners (nats-leaf://host:7422, or
	// tls://), one or more. Required.
	URLs []string
	// Credentials is a NATS credentials file the leaf connection
	// authenticates with. Default: none.
	Credentials string
	// TLS, if set, is the leaf connection's TLS configuration. Default nil.
	TLS *tls.Config
	// HubDomain is the hub's JetStream domain. Default "hub".
	HubDomain string
	// HubStream is the hub's aggregate stream. Default Config.Stream+"_ALL".
	HubStream string
	// HubReplicas are the aggregate's replicas when this binary creates it,
	// and those of the KV buckets it makes there. Default 3.
	HubReplicas int
	// ReconnectInterval is how often the leaf dials a hub it lost. Default
	// 1s.
	ReconnectInterval time.Duration
}

func (l LeafConfig) withDefaults(stream string) LeafConfig {
	if l.HubDomain == "" {
		l.HubDomain = DefaultHubDomain
	}
	if l.HubStream == "" {
		l.HubStream = stream + DefaultHubStreamSufix
	}
	if l.HubReplicas == 0 {
		l.HubReplicas = DefaultHubReplicas
	}
	if l.ReconnectInterval == 0 {
		l.ReconnectInterval = time.Second
	}
	return l
}

// ClusterConfig is for an embedded server joining a cluster by routes
// (Config.Cluster): not supported yet, refused by Open.
type ClusterConfig struct {
	// Name is the cluster's name, the same on every node. Required.
	Name string
	// Listen is the host:port this node accepts routes on. Required.
	Listen string
	// Routes are the nats-route://host:port URLs of every node of the
	// cluster (this one's is ignored). Required: nats-server clusters
	// JetStream only with routes configured.
	Routes []string
}

// validateTopology checks the fields of the topologies.
func (c Config) validateTopology() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if c.Leaf != nil && c.InstanceID == "" {
		return bad("Config.InstanceID is empty with Config.Leaf: every binary joining the hub needs an ID of its own (it is its JetStream domain and the origin of its events): set it, e.g. \"billing\"")
	}
	if err := bjs.ValidateToken("Config.InstanceID", c.InstanceID); err != nil || len(c.InstanceID) > 32 {
		return bad("Config.InstanceID %q: use 1 to 32 ASCII letters, digits, '_' and '-'", c.InstanceID)
	}
	if c.Partitions < 1 || c.Partitions > bjs.MaxPartitions {
		return bad("Config.Partitions %d: use 1 to %d (0 for the default, %d)", c.Partitions, bjs.MaxPartitions, DefaultPartitions)
	}
	if c.Leaf != nil {
		if c.NATSURL != "" || c.Cluster != nil {
			return bad("Config.Leaf is set with Config.NATSURL or Config.Cluster: a leaf keeps its embedded server and its own stream; choose one topology")
		}
		l := c.Leaf
		if len(l.URLs) == 0 {
			return bad("Config.Leaf.URLs is empty: set the hub's leaf-node URLs (nats-leaf://host:7422)")
		}
		for _, u := range l.URLs {
			if _, err := leafURL(u); err != nil {
				return bad("Config.Leaf.URLs: %v", err)
			}
		}
		if err := bjs.ValidateToken("Config.Leaf.HubDomain", l.HubDomain); err != nil {
			return bad("%v", err)
		}
		if l.HubDomain == c.InstanceID {
			return bad("Config.InstanceID %q is the hub's domain (Config.Leaf.HubDomain): a leaf's domain must differ from the hub's", c.InstanceID)
		}
		if err := bjs.ValidateToken("Config.Leaf.HubStream", l.HubStream); err != nil {
			return bad("%v", err)
		}
		if l.HubStream == c.Stream {
			return bad("Config.Leaf.HubStream %q is Config.Stream: the hub's aggregate needs a name of its own", l.HubStream)
		}
		if l.HubReplicas < 1 || l.HubReplicas > 5 {
			return bad("Config.Leaf.HubReplicas %d: use 1 to 5", l.HubReplicas)
		}
		if l.ReconnectInterval < 0 {
			return bad("Config.Leaf.ReconnectInterval is negative")
		}
	}
	if c.Cluster != nil {
		if c.NATSURL != "" {
			return bad("Config.Cluster is set with Config.NATSURL: Cluster makes the embedded server a cluster node; NATSURL connects to an external one")
		}
		if c.Listen == "" {
			return bad("Config.Cluster is set without Config.Listen: an embedded server that joins a cluster by routes must listen for clients (without a listener nats-server never becomes ready and its shutdown hangs: nats-server#5174): set Listen to a loopback host:port, with ListenInspectPassword or ListenAdminPassword")
		}
		// Not supported yet: three embedded nodes with Listen and routes on
		// loopback did not form a JetStream cluster in our tests (the
		// stream's creation timed out), so Open would hang until its
		// context ends. Refuse it plainly instead.
		return bad("Config.Cluster with Config.Listen is not supported yet (embedded cluster nodes did not form a JetStream cluster in Boxcar's tests): run a NATS cluster (see the README, \"From one binary to a cluster\") and connect with Config.NATSURL, or join a hub as a leaf with Config.Leaf")
	}
	return nil
}

// leafURL parses a hub leaf-node URL.
func leafURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%q is not a URL like nats-leaf://host:7422", s)
	}
	switch strings.ToLower(u.Scheme) {
	case "nats-leaf", "nats", "tls", "ws", "wss":
	default:
		return nil, fmt.Errorf("%q: scheme %q: use nats-leaf://, nats://, tls://, ws:// or wss://", s, u.Scheme)
	}
	return u, nil
}

// serverName is the embedded server's name: unique in a cluster.
func (c Config) serverName() string {
	if c.Cluster != nil || c.Leaf != nil {
		return c.InstanceID
	}
	return ""
}

// serverDomain is the embedded server's JetStream domain: a leaf's own.
func (c Config) serverDomain() string {
	if c.Leaf != nil {
		return c.InstanceID
	}
	return ""
}

// leafRemote is the embedded server's leaf connection to the hub.
func (c Config) leafRemote() *bjs.LeafRemote {
	if c.Leaf == nil {
		return nil
	}
	r := &bjs.LeafRemote{Credentials: c.Leaf.Credentials, TLS: c.Leaf.TLS, ReconnectInterval: c.Leaf.ReconnectInterval,
		Deny: []string{
			c.SubjectPrefix + ".>", bjs.DLQPrefix(c.SubjectPrefix) + ".>",
			// The coordination buckets are the hub's: a bucket of the same
			// name on the leaf (from its single-binary days) must not
			// exchange messages with them.
			"$KV." + instancesBucket + ".>", "$KV." + groupsBucket + ".>",
		}}
	for _, s := range c.Leaf.URLs {
		u, _ := leafURL(s) // validated
		r.URLs = append(r.URLs, u)
	}
	return r
}

// databaseID returns the database's own ID, made at its first Open.
func (b *Bus) databaseID(ctx context.Context) (string, error) {
	if b.cfg.inspect {
		id, _, err := sqlite.Meta(ctx, b.db, sqlite.MetaDatabaseID)
		return id, err
	}
	return sqlite.EnsureMeta(ctx, b.db, sqlite.MetaDatabaseID, b.ids.next(time.Now()))
}

// startTopology does what the topology needs before the relay starts: with
// a shared stream, claim the instance ID; with a hub, set up the link.
func (b *Bus) startTopology(ctx context.Context) error {
	switch b.cfg.topology() {
	case topologyShared:
		return claimInstance(ctx, b.js, b.cfg.Replicas, b.cfg.Stream, b.cfg.InstanceID, b.dbID)
	case topologyLeaf:
		hjs, err := jetstream.NewWithDomain(b.nc, b.cfg.Leaf.HubDomain)
		if err != nil {
			return err
		}
		b.subJS = hjs
		b.hub = newHubLink(b, hjs)
		return b.hub.first(ctx)
	}
	return nil
}

// stopTopology stops the hub link.
func (b *Bus) stopTopology(ctx context.Context) error {
	if b.hub == nil {
		return nil
	}
	if err := b.hub.stop(ctx); err != nil {
		return fmt.Errorf("boxcar: hub link: %w", err)
	}
	return nil
}

// subStream is the stream subscribers consume: the bus's own, or the hub's
// aggregate (nil until the hub was reached once).
func (b *Bus) subStream() jetstream.Stream {
	if b.hub != nil {
		return b.hub.aggregate()
	}
	return b.events
}

// errHubNotLinked: the hub's aggregate has not been reached yet.
var errHubNotLinked = errors.New("the hub has not been reached yet (Config.Leaf): subscribers start once it is")

// subStreamName is the name of the stream subscribers consume.
func (b *Bus) subStreamName() string {
	if b.cfg.Leaf != nil {
		return b.cfg.Leaf.HubStream
	}
	return b.cfg.Stream
}

// startOrWait starts the subscription; in a leaf whose hub is unreachable
// it starts it once the hub is back instead, in the background, and says
// so in the log and in Health (the subscriber is "waiting"). Bad
// configuration fails at once either way.
func (s *Subscription) startOrWait(ctx context.Context) error {
	b := s.b
	if b.hub == nil {
		return s.start(ctx)
	}
	if b.hub.aggregate() != nil {
		sctx, cancel := context.WithTimeout(ctx, hubRequestLimit)
		err := s.start(sctx)
		cancel()
		if err == nil || errors.Is(err, ErrInvalidConfig) || errors.Is(err, ErrGroup) || ctx.Err() != nil {
			return err
		}
		s.setWaiting(err)
	} else {
		s.setWaiting(errHubNotLinked)
	}
	b.log.Warn("boxcar: subscriber waits for the hub: it starts once the hub answers", logSub, s.consumer, logError, s.waitingFor())
	s.sup.Go(func(ctx context.Context) {
		for wait := hubRetryEvery; ; wait = min(2*wait, hubCheckEvery) {
			if _, err := b.hub.wait(ctx); err != nil {
				return
			}
			sctx, cancel := context.WithTimeout(ctx, hubRequestLimit)
			err := s.start(sctx)
			cancel()
			if err == nil {
				s.setWaiting(nil)
				b.log.Info("boxcar: subscriber started: the hub answers", logSub, s.consumer)
				return
			}
			s.setWaiting(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	})
	return nil
}

// subEvents is subStream, or an error while the hub was never reached.
func (b *Bus) subEvents() (jetstream.Stream, error) {
	if st := b.subStream(); st != nil {
		return st, nil
	}
	return nil, errHubNotLinked
}
