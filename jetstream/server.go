// Package jetstream runs the embedded nats-server (or connects to an external
// NATS), provisions Boxcar's streams and consumers, publishes the outbox in
// order exactly once, and encodes keys into subjects.
//
// It does not import the root boxcar package; the root package wires it.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures the embedded server.
type ServerConfig struct {
	// Dir holds the JetStream store and the lock file. Required.
	Dir string
	// Listen, if set, is a loopback host:port to accept NATS clients on (for
	// the nats CLI). Empty means no network listener at all.
	Listen string
	// Token authenticates clients on Listen. Required with Listen.
	Token string
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
}

// Server is a running embedded nats-server with its store lock.
type Server struct {
	srv   *server.Server
	lock  *dirLock
	token string

	shutdown sync.Once
	stopped  chan struct{} // closed when the server has stopped and the lock is released
}

// Start starts an embedded nats-server with JetStream, storing under
// cfg.Dir. The server installs no signal handlers, listens on no port unless
// cfg.Listen is set, and logs through cfg.Logger; its fatal log lines do not
// exit the process.
func Start(cfg ServerConfig) (*Server, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("jetstream: create %s: %w", cfg.Dir, err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:         "boxcar",
		JetStream:          true,
		StoreDir:           filepath.Join(cfg.Dir, "jetstream"),
		NoSigs:             true,
		DontListen:         cfg.Listen == "",
		MaxPayload:         cfg.MaxPayload,
		SyncAlways:         cfg.SyncAlways,
		SyncInterval:       cfg.SyncInterval,
		JetStreamMaxMemory: 64 << 20,
	}
	if cfg.Listen != "" {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			lock.release()
			return nil, fmt.Errorf("jetstream: listen address %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			lock.release()
			return nil, fmt.Errorf("jetstream: listen port %q: %w", portStr, err)
		}
		if port == 0 {
			port = server.RANDOM_PORT // nats-server reads 0 as its default 4222
		}
		opts.Host, opts.Port = host, port
		opts.Authorization = cfg.Token
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("jetstream: new server: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv.SetLoggerV2(&serverLogger{l: logger}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		lock.release()
		return nil, errors.New("jetstream: embedded server did not become ready in 30s")
	}
	return &Server{srv: srv, lock: lock, token: cfg.Token, stopped: make(chan struct{})}, nil
}

// Connect opens an in-process client connection (no socket).
func (s *Server) Connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(s.srv), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1)}
	if s.token != "" {
		opts = append(opts, nats.Token(s.token)) // in-process clients authenticate too
	}
	nc, err := nats.Connect("", opts...)
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
// and returns: an embedded library must never exit its host process.
type serverLogger struct{ l *slog.Logger }

func (s *serverLogger) Noticef(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), logComponent, "nats-server")
}
func (s *serverLogger) Warnf(format string, v ...any) {
	s.l.Warn(fmt.Sprintf(format, v...), logComponent, "nats-server")
}
func (s *serverLogger) Fatalf(format string, v ...any) {
	s.l.Error("fatal: "+fmt.Sprintf(format, v...), logComponent, "nats-server")
}
func (s *serverLogger) Errorf(format string, v ...any) {
	s.l.Error(fmt.Sprintf(format, v...), logComponent, "nats-server")
}
func (s *serverLogger) Debugf(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), logComponent, "nats-server")
}
func (s *serverLogger) Tracef(format string, v ...any) {}
