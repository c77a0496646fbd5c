package jetstream

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// The internal user (the bus's own connection) is accepted in-process only,
// even with its password; the listener's users are accepted on the listener
// only.
func TestUsersAreBoundToTheirConnectionType(t *testing.T) {
	t.Parallel()
	inspect := NewSecret()
	srv, err := Start(ServerConfig{Dir: t.TempDir(), Listen: "127.0.0.1:0", InspectPassword: inspect})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	nc, err := srv.Connect("internal")
	if err != nil {
		t.Fatalf("in-process as the internal user: %v", err)
	}
	nc.Close()
	if nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(internalUser, srv.password), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("the internal user connected over TCP")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("the internal user over TCP: got %v, want an authorization violation", err)
	}
	// In-process, a refused login shows as a closed pipe rather than the
	// server's error, and only after some seconds (10 on v2.15.3, which is
	// nats-server's default write deadline), so this case is tried once.
	if nc, err := nats.Connect("", nats.InProcessServer(srv.srv), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("connected in-process without credentials")
	}
	nc, err = nats.Connect(srv.ClientURL(), nats.UserInfo(InspectUser, inspect))
	if err != nil {
		t.Fatalf("inspect user over TCP: %v", err)
	}
	nc.Close()
}

// Start itself refuses a listener nobody can log in to, weak secrets and a
// TLS configuration without a certificate, before it touches the directory.
func TestStartRefusesInsecureConfig(t *testing.T) {
	t.Parallel()
	good := NewSecret()
	for name, c := range map[string]struct {
		cfg  ServerConfig
		want string
	}{
		"listen, no user": {ServerConfig{Listen: "127.0.0.1:0"}, "no client could log in"},
		"weak inspect":    {ServerConfig{Listen: "127.0.0.1:0", InspectPassword: "tok"}, "ServerConfig.InspectPassword is 3 characters long"},
		"weak admin":      {ServerConfig{Listen: "127.0.0.1:0", AdminPassword: strings.Repeat("ab", 20)}, "ServerConfig.AdminPassword uses only 2 distinct characters"},
		"same secret":     {ServerConfig{Listen: "127.0.0.1:0", InspectPassword: good, AdminPassword: good}, "AdminPassword equals InspectPassword"},
		"weak store key":  {ServerConfig{StoreKey: "0123456789"}, "ServerConfig.StoreKey is 10 characters long"},
		"unknown cipher":  {ServerConfig{StoreKey: good, StoreCipher: "DES"}, `StoreCipher "DES"`},
	} {
		dir := t.TempDir() + "/store"
		c.cfg.Dir = dir
		srv, err := Start(c.cfg)
		if err == nil {
			srv.Shutdown(context.Background())
			t.Errorf("%s: started", name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", name, err, c.want)
		}
	}
}
