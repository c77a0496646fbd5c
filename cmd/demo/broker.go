package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// The broker is a plain nats-server with JetStream in a process of its own,
// listening on loopback: the naive side's message bus (as Kafka would be in
// the article), and in the reorder scenario also Boxcar's (Config.NATSURL),
// so that both sides live through the same broker crash.

// runBroker is the broker child: it serves until its stdin closes.
func runBroker(spec childSpec) error {
	srv, err := server.NewServer(&server.Options{
		ServerName: "demo-broker",
		Host:       "127.0.0.1",
		Port:       spec.Port,
		JetStream:  true,
		StoreDir:   spec.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return err
	}
	srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		return errors.New("broker not ready after 20s")
	}
	fmt.Println("READY")
	io.Copy(io.Discard, os.Stdin) // until the parent closes it
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}

// broker is the parent's handle on a broker child.
type broker struct {
	exe   string
	name  string
	port  int
	store string
	p     *proc
}

func newBroker(exe, name, dir string) (*broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &broker{exe: exe, name: name, port: port, store: filepath.Join(dir, "broker")}, nil
}

func (b *broker) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", b.port) }

// start starts (or restarts, on the same port and store) the broker.
func (b *broker) start(ctx context.Context) error {
	p, err := startProc(b.exe, b.name, childSpec{Role: roleBroker, Port: b.port, StoreDir: b.store}, nil)
	if err != nil {
		return err
	}
	if err := p.await(ctx, "READY"); err != nil {
		return err
	}
	b.p = p
	return nil
}

// crash SIGKILLs the broker.
func (b *broker) crash() { b.p.kill() }

// stop shuts the broker down cleanly.
func (b *broker) stop() {
	if b.p != nil {
		b.p.stop(5 * time.Second)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
