// Package jetstream runs the embedded nats-server (or connects to an external
// NATS), provisions Boxcar's streams and consumers, publishes the outbox in
// order exactly once, and encodes keys into subjects.
//
// It does not import the root boxcar package; the root package wires it.
package jetstream

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures the embedded server.
type ServerConfig struct {
	// Dir holds the JetStream store and the lock file. Required. Start
	// creates it (and missing parents) readable by the owner only (0700);
	// the server's own directories and files under it are 0700 and 0600.
	Dir string
	// Listen, if set, is a loopback host:port to accept NATS clients on (for
	// the nats CLI). Empty means no network listener at all. Clients log
	// in as InspectUser or AdminUser, so at least one of InspectPassword
	// and AdminPassword is required with it.
	Listen string
	// InspectPassword, if set, admits InspectUser on Listen: read-only
	// requests (InspectAPI) and nothing else. See CheckSecret.
	InspectPassword string
	// AdminPassword, if set, admits AdminUser on Listen with every right in
	// the bus's account. See CheckSecret; it must differ from
	// InspectPassword.
	AdminPassword string
	// TLS, if set, makes Listen require TLS with this configuration, which
	// must hold a certificate (set ClientAuth and ClientCAs as well to
	// require client certificates). The in-process connection does not use
	// it. Nil means plain TCP.
	TLS *tls.Config
	// StoreKey, if set, encrypts the store with StoreCipher (nats-server's
	// JetStreamKey). An encrypted store opens only with the key and cipher
	// it was written with, and a key is refused on a store written without
	// one: Start returns ErrStoreKey, and leaves the store as it was. See
	// CheckSecret.
	StoreKey string
	// StoreCipher is the cipher of StoreKey: CipherChaCha20Poly1305 (the
	// default, "") or CipherAESGCM. Start records it in the directory
	// (boxcar.cipher), since the store cannot change it.
	StoreCipher string
	// SyncAlways makes the store fsync every message (slower, survives
	// power loss). Otherwise the store syncs every SyncInterval.
	SyncAlways bool
	// SyncInterval is how often the store fsyncs when not SyncAlways.
	// Zero means the server default (2 minutes).
	SyncInterval time.Duration
	// MaxPayload is the largest message the server accepts. Zero means 1 MiB.
	MaxPayload int32
	// Logger receives the server's log lines.
	Logger *slog.Logger

	// Name is the server's name, unique in a cluster. Default "boxcar".
	Name string
	// Domain is the server's JetStream domain: a leaf's own, so that its
	// stream stays apart from the hub's and other leaves'. Default none.
	Domain string
	// Leaf, if set, joins a hub as a leaf node (needs Domain).
	Leaf *LeafRemote
}

// check refuses a configuration that would start an insecure server.
func (cfg ServerConfig) check() error {
	if cfg.Dir == "" {
		return errors.New("jetstream: ServerConfig.Dir is empty: set it to a writable directory for the store")
	}
	if cfg.Listen != "" && cfg.InspectPassword == "" && cfg.AdminPassword == "" {
		return errors.New("jetstream: ServerConfig.Listen is set without InspectPassword or AdminPassword: no client could log in")
	}
	for _, f := range []struct{ name, value string }{
		{"ServerConfig.InspectPassword", cfg.InspectPassword},
		{"ServerConfig.AdminPassword", cfg.AdminPassword},
		{"ServerConfig.StoreKey", cfg.StoreKey},
	} {
		if f.value == "" {
			continue
		}
		if err := CheckSecret(f.name, f.value); err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
	}
	if cfg.InspectPassword != "" && cfg.InspectPassword == cfg.AdminPassword {
		return errors.New("jetstream: ServerConfig.AdminPassword equals InspectPassword: the inspector could log in as admin; use two secrets")
	}
	if cfg.TLS != nil && len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
		return errors.New("jetstream: ServerConfig.TLS has no certificate: set Certificates (or GetCertificate)")
	}
	if _, err := storeCipher(cmp.Or(cfg.StoreCipher, CipherChaCha20Poly1305)); err != nil {
		return err
	}
	if cfg.Leaf != nil && cfg.Domain == "" {
		return errors.New("jetstream: ServerConfig.Leaf is set without Domain: a leaf needs a JetStream domain of its own")
	}
	return nil
}

// Server is a running embedded nats-server with its store lock.
type Server struct {
	srv      *server.Server
	lock     *dirLock
	password string // of internalUser

	opts    *server.Options // as started: CutLeaf reloads a copy
	leafMu  sync.Mutex
	leafErr string // the last error nats-server logged about its leaf connection

	shutdown sync.Once
	stopped  chan struct{} // closed when the server has stopped and the lock is released
}

// Start starts an embedded nats-server with JetStream, storing under
// cfg.Dir. The server installs no signal handlers, listens on no port unless
// cfg.Listen is set, and logs through cfg.Logger; its fatal log lines do not
// exit the process. Every client logs in, the in-process one too (Connect);
// nothing connects without a password.
func Start(cfg ServerConfig) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := makeDir(cfg.Dir, logger); err != nil {
		return nil, err
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s, err := start(cfg, logger)
	if err != nil {
		lock.release()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

// makeDir creates the store directory for its owner alone, or warns if an
// existing one is open to others (it is not changed: it may be shared with
// other files of the app's).
func makeDir(dir string, logger *slog.Logger) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("jetstream: create %s: %w", dir, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("jetstream: store directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("jetstream: store directory %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		logger.Warn("jetstream: the store directory is open to other users (the store inside it is not): chmod 700 it",
			"dir", dir, "mode", perm.String())
	}
	return nil
}

// start starts the server on a locked directory.
func start(cfg ServerConfig, logger *slog.Logger) (*Server, error) {
	storeDir := filepath.Join(cfg.Dir, "jetstream")
	cipherName := cmp.Or(cfg.StoreCipher, CipherChaCha20Poly1305)
	cipher, err := storeCipher(cipherName)
	if err != nil {
		return nil, err
	}
	if err := checkStoreKeyBefore(cfg.Dir, storeDir, cfg.StoreKey, cipherName); err != nil {
		return nil, err
	}
	password := NewSecret()
	accounts, users, err := authorize(cfg, password)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:         cmp.Or(cfg.Name, "boxcar"),
		JetStream:          true,
		JetStreamDomain:    cfg.Domain,
		StoreDir:           storeDir,
		NoSigs:             true,
		DontListen:         cfg.Listen == "",
		MaxPayload:         cfg.MaxPayload,
		SyncAlways:         cfg.SyncAlways,
		SyncInterval:       cfg.SyncInterval,
		JetStreamMaxMemory: 64 << 20,
		JetStreamKey:       cfg.StoreKey,
		JetStreamCipher:    cipher,
		Accounts:           accounts,
		Users:              users,
	}
	if cfg.Listen != "" {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("jetstream: listen address %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("jetstream: listen port %q: %w", portStr, err)
		}
		if port == 0 {
			port = server.RANDOM_PORT // nats-server reads 0 as its default 4222
		}
		opts.Host, opts.Port = host, port
		if cfg.TLS != nil {
			opts.TLSConfig = cfg.TLS.Clone()
		}
	}
	if cfg.Leaf != nil {
		if err := applyLeaf(opts, cfg.Domain, cfg.Leaf); err != nil {
			return nil, err
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("jetstream: new server: %w", err)
	}
	s := &Server{srv: srv, opts: opts.Clone(), password: password, stopped: make(chan struct{})}
	srv.SetLoggerV2(&serverLogger{l: logger, leaf: s.noteLeafLog}, false, false, false)
	srv.Start()
	stop := func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	if !srv.ReadyForConnections(30 * time.Second) {
		stop()
		return nil, errors.New("jetstream: embedded server did not become ready in 30s")
	}
	// With accounts configured, nats-server enables JetStream only in the
	// accounts whose configuration asks for it, which a configuration file
	// can say and server.Options cannot: enable it in the bus's account,
	// which loads the streams from the store.
	if err := srv.GlobalAccount().EnableJetStream(nil, nil); err != nil {
		stop()
		return nil, fmt.Errorf("jetstream: enable JetStream: %w", err)
	}
	if err := checkStoreKeyAfter(srv, storeDir); err != nil {
		stop()
		return nil, err
	}
	if err := recordCipher(cfg.Dir, cfg.StoreKey, cipherName); err != nil {
		stop()
		return nil, err
	}
	return s, nil
}

// Connect opens an in-process client connection (no socket), as the
// internal user: every right in the bus's account.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(s.srv), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1),
		nats.UserInfo(internalUser, s.password))
	if err != nil {
		return nil, fmt.Errorf("jetstream: connect in-process: %w", err)
	}
	return nc, nil
}

// ClientURL is the URL clients use to reach the listener, or "" if the
// server does not listen.
func (s *Server) ClientURL() string {
	if s.srv.Addr() == nil {
		return ""
	}
	return s.srv.ClientURL()
}

// StreamStorePath is where the embedded server keeps the store of the bus
// account's stream name.
func (s *Server) StreamStorePath(name string) string {
	return filepath.Join(s.srv.StoreDir(), server.DEFAULT_GLOBAL_ACCOUNT, "streams", name)
}

// StreamStoreOnDisk reports whether the store of the bus account's stream
// name is on disk. nats-server takes a deleted stream out of its account
// before it removes the store (stream.stop, v2.15.3): while a stream is
// missing from the account and its store is still on disk, its delete has
// not ended, and a stream of that name made now would get the old store's
// directory, which the ending delete renames away.
func (s *Server) StreamStoreOnDisk(name string) bool {
	_, err := os.Stat(s.StreamStorePath(name))
	return err == nil
}

// Underlying returns the nats-server, for tests and tools.
func (s *Server) Underlying() *server.Server { return s.srv }

// Shutdown stops the server and then releases the store lock. It waits for
// that up to ctx's deadline and no longer: past it, the shutdown goes on in
// a goroutine of its own, which releases the lock once the server has
// stopped and then ends, so it outlives Shutdown only as long as
// nats-server's own shutdown takes (it flushes and closes the store).
// Meanwhile a Start on the same directory fails with ErrDirLocked, saying
// that the holder is still closing. Shutdown returns nil if the server has
// stopped, whatever ctx did, and ctx's error otherwise. It may be called
// more than once: every call waits for the same shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Do(func() {
		s.lock.markClosing()
		go func() {
			s.srv.Shutdown()
			s.srv.WaitForShutdown()
			s.lock.release()
			close(s.stopped)
		}()
	})
	select {
	case <-s.stopped:
		return nil
	case <-ctx.Done():
		select {
		case <-s.stopped: // both were ready: the shutdown's outcome wins
			return nil
		default:
		}
		return fmt.Errorf("jetstream: shutdown: %w (the server goes on shutting down, and releases the store directory when it has stopped)", ctx.Err())
	}
}

// logComponent is the log attribute that marks nats-server's own lines.
const logComponent = "component"

// serverLogger forwards nats-server logs to slog. Fatalf logs at error level
// and returns: an embedded library must never exit its host process. The
// errors about the leaf connection also go to leaf (Server.LeafError).
type serverLogger struct {
	l    *slog.Logger
	leaf func(string)
}

func (s *serverLogger) Noticef(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), logComponent, "nats-server")
}
func (s *serverLogger) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if msg == plaintextPasswordsWarning {
		// Every start has users with passwords (the internal user's at
		// least), random and held in memory only; bcrypt hashes would cost
		// tens of milliseconds at each login and protect nothing here.
		s.l.Debug(msg, logComponent, "nats-server")
		return
	}
	s.l.Warn(msg, logComponent, "nats-server")
}

// plaintextPasswordsWarning is the line nats-server logs at each start
// when its users' passwords are not bcrypt hashes.
const plaintextPasswordsWarning = "Plaintext passwords detected, use nkeys or bcrypt"

func (s *serverLogger) Fatalf(format string, v ...any) {
	s.l.Error("fatal: "+fmt.Sprintf(format, v...), logComponent, "nats-server")
}
func (s *serverLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if s.leaf != nil && strings.Contains(strings.ToLower(msg), "leafnode") {
		s.leaf(msg)
	}
	s.l.Error(msg, logComponent, "nats-server")
}
func (s *serverLogger) Debugf(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), logComponent, "nats-server")
}
func (s *serverLogger) Tracef(format string, v ...any) {}
