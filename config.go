package boxcar

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// Defaults of Config and SubscribeOptions. A zero field means its default.
const (
	DefaultStream             = "BOXCAR"
	DefaultSubjectPrefix      = "boxcar"
	DefaultInstanceID         = "main"
	DefaultPartitions         = 64
	DefaultReplicas           = 1
	DefaultRetention          = 7 * 24 * time.Hour
	DefaultDuplicateWindow    = 2 * time.Minute
	DefaultMaxEventBytes      = 1<<20 - 16<<10
	DefaultRelayBatch         = 1000
	DefaultRelayPollInterval  = time.Second
	DefaultCursorSaveInterval = 100 * time.Millisecond
	DefaultPruneDelay         = 3 * time.Minute
	DefaultPublishTimeout     = 5 * time.Second
	DefaultSynchronous        = sqlite.SyncNormal

	DefaultWorkers        = 8
	DefaultBatchSize      = 256
	DefaultMaxInFlight    = 1024
	DefaultMaxAttempts    = 5
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultHandlerTimeout = 30 * time.Second
	DefaultAckWait        = 30 * time.Second
	DefaultMaxBatchTime   = 10 * time.Millisecond

	DefaultStoreCipher = StoreCipherChaCha20Poly1305
)

// EventStreamDuplicateWindow is the longest duplicate window the event
// stream is given (Config.DuplicateWindow, if shorter): long enough to drop
// a publish sent twice at once, short enough that JetStream's memory for it
// stays small at any relay rate (~116 B per event within it, on each
// replica).
const EventStreamDuplicateWindow = time.Second

// minDuplicateWindow is the shortest duplicate window nats-server takes.
const minDuplicateWindow = 100 * time.Millisecond

// The users of Config.Listen.
const (
	ListenInspectUser = bjs.InspectUser // read-only, with Config.ListenInspectPassword
	ListenAdminUser   = bjs.AdminUser   // every right, with Config.ListenAdminPassword
)

// The ciphers of Config.StoreCipher (nats-server's names for them).
const (
	StoreCipherChaCha20Poly1305 = bjs.CipherChaCha20Poly1305
	StoreCipherAESGCM           = bjs.CipherAESGCM
)

// NewSecret returns a random secret for Config.ListenInspectPassword,
// Config.ListenAdminPassword or Config.StoreKey: 32 bytes from crypto/rand,
// base64url (43 characters). Make one once and keep it where the app keeps
// its other secrets: the store key must be the same at every Open.
func NewSecret() string { return bjs.NewSecret() }

// Config configures a Bus. Every field has a default (the Default*
// constants); the comment of each field states it.
type Config struct {
	// Dir is the directory of the embedded NATS server's store and its lock
	// file. Required unless NATSURL is set. Only one process (and one Bus)
	// can hold a Dir at a time.
	Dir string

	// NATSURL, if set, connects to an external NATS server or cluster
	// instead of embedding one: instances on a shared cluster (see the
	// README, "From one binary to a cluster"). Every instance has its own
	// database and InstanceID, and publishes into the shared stream on its
	// own subtree (prefix.InstanceID.>), chained per instance. Open fails if
	// the server cannot be reached. Default "" (embedded).
	NATSURL string
	// NATSOptions are extra options for the connection to NATSURL
	// (credentials, TLS). Default none.
	NATSOptions []nats.Option
	// Replicas of the streams on an external cluster (3 for a cluster of
	// three or more). Default 1.
	Replicas int

	// InstanceID names this binary or instance: the origin token of the
	// subjects it publishes (prefix.origin.partition.type.key, see doc.go),
	// its JetStream domain with Leaf, its subtree of the shared stream with
	// NATSURL or Cluster. ASCII letters, digits, '_' and '-', at most 32
	// bytes. With Leaf, NATSURL or Cluster it is claimed for this database
	// (in the KV bucket boxcar_instances of the hub or cluster): another
	// database claiming it fails Open with ErrInstanceTaken (with Leaf, once
	// the hub is reachable: until then the bus runs, and Health says so).
	// Default "main"; required with Leaf.
	InstanceID string
	// Partitions is how many partitions event keys hash into: the partition
	// token of every subject, which groups of instances share work by (see
	// SubscribeOptions.Group). A stream records it, and every instance on a
	// stream must use the stream's (Open refuses another). 1 to 1024.
	// Default 64.
	Partitions int
	// Leaf, if set, joins a hub (a NATS cluster) as a leaf node: the
	// binary keeps its embedded server, outbox and stream, publishes
	// locally whether or not the hub is reachable, and the hub sources its
	// stream into an aggregate that subscribers of every binary consume. See
	// LeafConfig. Not with NATSURL or Cluster. Default nil.
	Leaf *LeafConfig
	// Cluster is reserved for an embedded server that joins a NATS cluster
	// by routes. Not supported yet: Open refuses it (without Listen with
	// the reason nats-server gives no choice about, nats-server#5174: a
	// server that joins by routes without a client listener never becomes
	// ready and its shutdown hangs; with Listen because embedded nodes did
	// not form a JetStream cluster in Boxcar's tests). Run a NATS cluster
	// and use NATSURL, or Leaf. Default nil.
	Cluster *ClusterConfig

	// Listen, if set, makes the embedded server accept NATS clients on this
	// loopback host:port, for the nats CLI and other tools. Default "": no
	// listener at all; the bus connects in-process. Every client logs in
	// with a user and password: ListenInspectUser with
	// ListenInspectPassword (read-only) or ListenAdminUser with
	// ListenAdminPassword (every right); set at least one of them. Nothing
	// connects without one: the bus's own connection logs in as a user of
	// its own, accepted in-process only, whose password is made at random at
	// each start and never shown. The README's Security section says what
	// each credential gives.
	Listen string
	// ListenInspectPassword, if set, lets ListenInspectUser ("inspect") log
	// in on Listen to read and nothing else: account, stream and consumer
	// info, and stored messages by sequence or last by subject (nats stream
	// info, nats stream get, nats consumer info; the requests are
	// jetstream.InspectAPI). It cannot publish, create, update, delete or
	// purge streams, consumers or messages, fetch from a consumer, ack or
	// nak, nor subscribe to events; it lives in an account of its own, so
	// that no request of its can make the server write into the bus's
	// streams. It reads every event in the streams. At least 32 characters
	// and not a repetition: NewSecret makes one. Default "": no inspect
	// user.
	ListenInspectPassword string
	// ListenAdminPassword, if set, lets ListenAdminUser ("admin") log in on
	// Listen with every right in the bus's account: it can publish events
	// that subscribers apply as genuine, ack messages no handler saw, fetch
	// a subscriber's messages, delete or purge streams and consumers. Give
	// it only to those who may change the app's data. Same rules as
	// ListenInspectPassword, and a different secret. Default "": no admin
	// user.
	ListenAdminPassword string
	// ListenTLS, if set, makes Listen require TLS with this configuration:
	// it must hold the server's certificate (Certificates or
	// GetCertificate); set ClientAuth and ClientCAs too to require client
	// certificates. Clients then connect with the CA (nats --tlsca). The
	// bus's in-process connection does not use it. Default nil: plain TCP
	// on loopback, where the passwords cross in clear, readable by whoever
	// can capture loopback traffic (root) and sent to whatever process
	// holds the port while the bus does not.
	ListenTLS *tls.Config

	// StoreKey, if set, encrypts the embedded JetStream store: messages
	// with their subjects and headers, stream and consumer state (the names
	// of streams and consumers stay visible as directory names). It is
	// nats-server's JetStreamKey, from which the server derives a key per
	// stream and per message block, for StoreCipher. At least 32
	// characters and not a repetition: NewSecret makes one. Keep it out of
	// Dir and the database. Default "": not encrypted (the store's files
	// are 0600 in 0700 directories, readable by the owner and root). A store
	// opens only with the key and cipher it was written with, and a key is
	// refused on a store written without one (nats-server's conversion of
	// an existing store is not reliable: to encrypt, start in a new, empty
	// Dir). Otherwise Open fails with ErrInvalidConfig naming the field, and
	// leaves the store as it was. A lost key is a lost stream. Not with
	// NATSURL.
	StoreKey string
	// StoreCipher is the cipher of StoreKey: StoreCipherChaCha20Poly1305
	// (the default, as in nats-server: fast in software, constant-time on
	// any CPU) or StoreCipherAESGCM (faster on CPUs with AES instructions).
	// It cannot change once the store is written; the bus records it in
	// Dir. Default "" means DefaultStoreCipher when StoreKey is set.
	StoreCipher string

	// Stream is the JetStream stream of the events. Default "BOXCAR"; dead
	// letters go to Stream+"_DLQ".
	Stream string
	// SubjectPrefix starts every event subject (prefix.type.key). Default
	// "boxcar"; dead letters use SubjectPrefix+"_dlq".
	SubjectPrefix string
	// Retention is how long the streams keep events: the replay window.
	// Default 7 days.
	Retention time.Duration
	// DuplicateWindow is JetStream's duplicate window of the dead-letter
	// stream and, in the leaf topology, of the hub's aggregate: a dead
	// letter published again after a crash, or an event sourced twice,
	// within it is dropped. Default 2 minutes.
	//
	// The event stream keeps the smaller of it and
	// EventStreamDuplicateWindow: its exactly-once does not depend on the
	// window (the relay chains its publishes, and reads the stream's end
	// from the stream's leader), and JetStream holds ~116 B of memory per
	// event published within it, so a 2-minute window over a backlog
	// drained at 50,000 events/s would hold ~700 MB.
	DuplicateWindow time.Duration
	// SyncAlways makes the embedded store fsync every message. Default false:
	// the store fsyncs every 2 minutes, and the outbox keeps relayed rows for
	// PruneDelay so that a power loss cannot lose them.
	SyncAlways bool

	// MaxEventBytes caps len(Event.Data) plus the size of Event.Headers.
	// Default 1 MiB minus 16 KiB, so that with Boxcar's own headers an event,
	// and its dead letter whole, fit the server's default 1 MiB max payload.
	// The embedded server's max payload is raised to fit a larger value (up
	// to 64 MiB) and the dead letters of such events; an external server's is
	// read at Open, which refuses a MaxEventBytes it cannot carry, and warns
	// when the largest events' dead letters would be cut to fit (they could
	// not be redriven: leave bjs.DeadLetterReserve, about 8 KiB, to spare).
	MaxEventBytes int

	// RelayBatch is how many outbox rows the relay reads and publishes at
	// once. Default 1000.
	RelayBatch int
	// RelayPollInterval is how often the relay looks for commits it was not
	// told about (transactions on connections not opened by sqlite.Open).
	// Default 1s; reads only, so an idle poll writes nothing.
	RelayPollInterval time.Duration
	// CursorSaveInterval is how often a busy relay saves its cursor. Default
	// 100ms. The stream, not the saved cursor, is the truth on restart.
	CursorSaveInterval time.Duration
	// PruneDelay is how long relayed rows stay in the outbox, so that events
	// JetStream acked but had not yet fsynced can be republished after a
	// power loss. Default 3 minutes (the store syncs every 2), 0 with
	// SyncAlways.
	PruneDelay time.Duration
	// PublishTimeout bounds the wait for JetStream's ack of a publish.
	// Default 5s.
	PublishTimeout time.Duration

	// DedupeRetention is how long dedupe rows are kept at least. Default
	// Retention, and never less (Open refuses it): a row is pruned only once
	// this has passed and its event has left the stream, so that no replay
	// or redelivery can apply an event twice.
	DedupeRetention time.Duration

	// Synchronous is when Bus.Tx and Publish return. Whatever it is, what
	// leaves the database waits until it is on disk: the relay publishes an
	// event, and a subscriber acks the events of its transaction, only once
	// an fsync of the WAL covers the commit (one fsync covers every commit
	// made before it and runs off the write lock, so the writer goes on
	// meanwhile; the write connection commits with synchronous=NORMAL). So
	// a power loss never leaves a published event whose transaction the
	// database lost, nor an acked event whose handler's effects it lost.
	//   - sqlite.SyncNormal (the default): Tx returns at the commit, as the
	//     app's own connections from sqlite.Open do (NORMAL by default): a
	//     power loss (not a crash of the process) can take back the last
	//     transactions, each with its events, which were never published.
	//   - sqlite.SyncFull: Tx returns once its commit is on disk: what it
	//     reported survives a power loss. Costs a shared fsync per group of
	//     commits (bench/RESULTS.md, the defaults stage).
	Synchronous string

	// Health sets how Bus.Health judges the components. Defaults: see
	// HealthOptions.
	Health HealthOptions

	// Schemas, if set, validates every event at PublishTx against its
	// type's schema (package schema's Registry is one): an event that does
	// not match is refused with ErrSchema and nothing is written, and the
	// event carries the version it matched (Message.SchemaVersion). Default
	// nil: no validation.
	Schemas SchemaValidator

	// Tracing, if set, is told of each event's creation (PublishTx), its
	// publish (each relay batch) and each handler call, and adds headers
	// (a trace context) to each event at PublishTx (see Tracing; the module
	// github.com/boxcar-bus/boxcar/otel is one, for OpenTelemetry). Default
	// nil: no tracing, and no cost.
	Tracing Tracing

	// Logger receives Boxcar's logs. Default: discard.
	Logger *slog.Logger

	// Probe, if set, is called at the instants of the data path where a
	// crash is hardest to survive (see Probe). It is for crash tests: a
	// probe that kills the process there shows that the guarantees hold
	// across that instant. It runs on Boxcar's hot paths, so it must return
	// at once (or never). It cannot change what Boxcar does. Default nil.
	Probe func(Probe)

	// inspect: opened by Inspect, for reading only.
	inspect bool
	// upgradeLayout: opened by UpgradeLayout, which may rewrite a shared
	// stream.
	upgradeLayout bool
	// seams are where the package's own tests reach into the data path;
	// nil everywhere else.
	seams *testSeams
}

// SchemaValidator validates event payloads at PublishTx (see
// Config.Schemas).
type SchemaValidator interface {
	// ValidateEvent checks data for an event of typ against version of its
	// schema (0: the latest) and returns the version it matched, or 0 if typ
	// has no schema (the event is then published as it is). An error refuses
	// the event; it should name the type, the version and the failing path.
	// It runs on PublishTx's path, in the caller's transaction: it must not
	// use the database.
	ValidateEvent(typ string, version int, data []byte) (int, error)
}

// maxServerPayload is the largest max payload nats-server accepts.
const maxServerPayload = 64 << 20

// maxMaxEventBytes is the largest Config.MaxEventBytes: what fits the
// largest max payload beside Boxcar's own headers, as an event and as a dead
// letter.
var maxMaxEventBytes = maxServerPayload - bjs.HeaderReserve - bjs.DeadLetterReserve

// serverMaxPayload is the embedded server's max payload for c: the
// server's default (1 MiB) unless MaxEventBytes, with Boxcar's headers,
// needs more, or the dead letter of such an event does.
func (c Config) serverMaxPayload() int {
	return max(1<<20, c.MaxEventBytes+bjs.HeaderReserve+bjs.DeadLetterReserve)
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.InstanceID == "" && c.Leaf == nil {
		c.InstanceID = DefaultInstanceID
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Leaf != nil {
		l := c.Leaf.withDefaults(c.Stream)
		c.Leaf = &l
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = DefaultMaxEventBytes
	}
	if c.RelayBatch == 0 {
		c.RelayBatch = DefaultRelayBatch
	}
	if c.RelayPollInterval == 0 {
		c.RelayPollInterval = DefaultRelayPollInterval
	}
	if c.CursorSaveInterval == 0 {
		c.CursorSaveInterval = DefaultCursorSaveInterval
	}
	if c.PruneDelay == 0 && !c.SyncAlways {
		c.PruneDelay = DefaultPruneDelay
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.DedupeRetention == 0 {
		c.DedupeRetention = c.Retention
	}
	if c.Synchronous == "" {
		c.Synchronous = DefaultSynchronous
	}
	if c.StoreCipher == "" && c.StoreKey != "" {
		c.StoreCipher = DefaultStoreCipher
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.seams == nil {
		c.seams = &testSeams{}
	}
	c.Health = c.Health.withDefaults()
	return c
}

// validate checks a Config with its defaults filled in; its errors say how
// to fix it.
func (c Config) validate() error {
	bad := badConfig
	if err := c.validateAccess(); err != nil {
		return err
	}
	if err := bjs.ValidateToken("Config.Stream", c.Stream); err != nil {
		return bad("%v", err)
	}
	if err := bjs.ValidateToken("Config.SubjectPrefix", c.SubjectPrefix); err != nil {
		return bad("%v", err)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"Retention", c.Retention}, {"DuplicateWindow", c.DuplicateWindow}, {"RelayPollInterval", c.RelayPollInterval},
		{"CursorSaveInterval", c.CursorSaveInterval}, {"PublishTimeout", c.PublishTimeout}, {"DedupeRetention", c.DedupeRetention},
	} {
		if f.d < 0 {
			return bad("Config.%s is negative: use 0 for the default", f.name)
		}
	}
	if c.PruneDelay < 0 {
		return bad("Config.PruneDelay is negative")
	}
	if c.DedupeRetention < c.Retention {
		return bad("Config.DedupeRetention (%v) is shorter than Config.Retention (%v): a replay within the stream's window would apply events twice; use at least Retention (0 for the default, Retention)", c.DedupeRetention, c.Retention)
	}
	if c.DuplicateWindow < minDuplicateWindow {
		return bad("Config.DuplicateWindow %v is shorter than JetStream's least, %v: use at least that (0 for the default, %v)", c.DuplicateWindow, minDuplicateWindow, DefaultDuplicateWindow)
	}
	if c.DuplicateWindow > c.Retention {
		return bad("Config.DuplicateWindow (%v) exceeds Config.Retention (%v)", c.DuplicateWindow, c.Retention)
	}
	if c.MaxEventBytes < 0 || c.MaxEventBytes > maxMaxEventBytes {
		return bad("Config.MaxEventBytes %d: use 1 to %d (64 MiB less room for Boxcar's headers; 0 for the default)", c.MaxEventBytes, maxMaxEventBytes)
	}
	if c.RelayBatch < 0 || c.RelayBatch > 10_000 {
		return bad("Config.RelayBatch %d: use 1 to 10000 (0 for the default)", c.RelayBatch)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return bad("Config.Replicas %d: use 1 to 5", c.Replicas)
	}
	if err := c.Health.validate(); err != nil {
		return err
	}
	if err := c.validateTopology(); err != nil { // topology.go
		return err
	}
	if s := strings.ToUpper(c.Synchronous); s != sqlite.SyncFull && s != sqlite.SyncNormal {
		return bad("Config.Synchronous %q: use sqlite.SyncFull or sqlite.SyncNormal", c.Synchronous)
	}
	return nil
}

// validateAccess checks what protects the embedded server: where it
// listens, its passwords and TLS, and the store's encryption.
func (c Config) validateAccess() error {
	bad := badConfig
	if c.Dir == "" && c.NATSURL == "" {
		return bad("Config.Dir is empty: set it to a writable directory for the embedded NATS store (or set Config.NATSURL)")
	}
	if c.Listen != "" {
		if c.NATSURL != "" {
			return bad("Config.Listen is set with Config.NATSURL: Listen is for the embedded server only")
		}
		host, _, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return bad("Config.Listen %q is not host:port: %v", c.Listen, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return bad("Config.Listen %q is not a loopback address: use 127.0.0.1:PORT", c.Listen)
		}
		if c.ListenInspectPassword == "" && c.ListenAdminPassword == "" {
			return bad("Config.Listen is set without Config.ListenInspectPassword or Config.ListenAdminPassword: no client could log in; set ListenInspectPassword (read-only) to a secret from boxcar.NewSecret()")
		}
	} else {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"ListenInspectPassword", c.ListenInspectPassword != ""}, {"ListenAdminPassword", c.ListenAdminPassword != ""}, {"ListenTLS", c.ListenTLS != nil},
		} {
			if f.set {
				return bad("Config.%s is set without Config.Listen: set Listen to a loopback host:port, or remove %s", f.name, f.name)
			}
		}
	}
	secrets := []struct{ name, value string }{
		{"Config.ListenInspectPassword", c.ListenInspectPassword},
		{"Config.ListenAdminPassword", c.ListenAdminPassword},
		{"Config.StoreKey", c.StoreKey},
	}
	for i, f := range secrets {
		if f.value == "" {
			continue
		}
		if err := bjs.CheckSecret(f.name, f.value); err != nil {
			return bad("%v", err)
		}
		for _, g := range secrets[:i] {
			if g.value == f.value {
				return bad("%s equals %s: use a secret of its own for each", f.name, g.name)
			}
		}
	}
	if t := c.ListenTLS; t != nil && len(t.Certificates) == 0 && t.GetCertificate == nil && t.GetConfigForClient == nil {
		return bad("Config.ListenTLS has no certificate: set its Certificates (or GetCertificate) to the listener's certificate")
	}
	if c.StoreKey != "" && c.NATSURL != "" {
		return bad("Config.StoreKey is set with Config.NATSURL: it encrypts the embedded server's store; encrypt an external server's store in its own configuration")
	}
	if c.StoreCipher != "" {
		if c.StoreKey == "" {
			return bad("Config.StoreCipher is set without Config.StoreKey: set the key too, or remove the cipher")
		}
		if c.StoreCipher != StoreCipherChaCha20Poly1305 && c.StoreCipher != StoreCipherAESGCM {
			return bad("Config.StoreCipher %q: use boxcar.StoreCipherChaCha20Poly1305 or boxcar.StoreCipherAESGCM", c.StoreCipher)
		}
	}
	return nil
}

func badConfig(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
}
