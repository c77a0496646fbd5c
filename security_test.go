package boxcar

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// violations collects the permission violations the server reports to a
// client connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err.Error())
	v.mu.Unlock()
}

// wait waits for a permissions violation that mentions want.
func (v *violations) wait(t *testing.T, want string) {
	t.Helper()
	waitFor(t, "a permissions violation for "+want, 30*time.Second, func() (bool, string) {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, e := range v.errs {
			if strings.Contains(e, "Permissions Violation") && strings.Contains(e, want) {
				return true, ""
			}
		}
		return false, fmt.Sprint(v.errs)
	})
}

// connectAs connects to the bus's listener as user.
func connectAs(t *testing.T, bus *Bus, user, password string, opts ...nats.Option) (*nats.Conn, *violations) {
	t.Helper()
	v := &violations{}
	opts = append([]nats.Option{nats.UserInfo(user, password), nats.ErrorHandler(v.handler), nats.MaxReconnects(0)}, opts...)
	nc, err := nats.Connect(bus.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, v
}

// The inspect user reads the bus's streams, consumers and messages, and is
// refused everything that writes, deletes or takes deliveries; no request
// of its can make the server write into the event stream; and the bus's
// state is untouched afterwards.
func TestListenInspectorReadsOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	inspectPassword := NewSecret()
	tb := setup(t, Config{Listen: "127.0.0.1:0", ListenInspectPassword: inspectPassword, ListenAdminPassword: NewSecret()})
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 3)
	waitApplied(t, tb.db, "ledger", 3)
	waitRelayed(t, tb.bus, 3)
	// The acks follow the commits once an fsync covers them.
	waitFor(t, "the ledger's ack floor at 3", time.Minute, func() (bool, string) {
		info, err := tb.bus.js.Consumer(ctx, tb.bus.StreamName(), "ledger")
		if err != nil {
			return false, err.Error()
		}
		return info.CachedInfo().AckFloor.Stream == 3, fmt.Sprintf("ack floor %d", info.CachedInfo().AckFloor.Stream)
	})

	nc, refusals := connectAs(t, tb.bus, ListenInspectUser, inspectPassword)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// What it can read.
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Errorf("account info: %v", err)
	}
	stream, err := js.Stream(ctx, tb.bus.StreamName())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if n := stream.CachedInfo().State.Msgs; n != 3 {
		t.Errorf("stream info: %d messages, want 3", n)
	}
	if _, err := js.Stream(ctx, tb.bus.DLQStreamName()); err != nil {
		t.Errorf("dead-letter stream info: %v", err)
	}
	cons, err := stream.Consumer(ctx, "ledger")
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	if got := cons.CachedInfo().AckFloor.Stream; got != 3 {
		t.Errorf("consumer info: ack floor %d, want 3", got)
	}
	var names []string
	for name := range js.StreamNames(ctx).Name() {
		names = append(names, name)
	}
	if len(names) != 2 {
		t.Errorf("stream names: %v, want the event and dead-letter streams", names)
	}
	var consumers []string
	for info := range stream.ListConsumers(ctx).Info() {
		consumers = append(consumers, info.Name)
	}
	if len(consumers) != 1 || consumers[0] != "ledger" {
		t.Errorf("consumer list: %v, want [ledger]", consumers)
	}
	msg, err := stream.GetMsg(ctx, 1) // a direct get: the stream allows them
	if err != nil || msg.Header.Get(bjs.HeaderSeq) != "1" || string(msg.Data) != "1" {
		t.Fatalf("direct get of message 1: %v %v", msg, err)
	}
	if _, err := stream.GetLastMsgForSubject(ctx, msg.Subject); err != nil {
		t.Errorf("direct get, last by subject: %v", err)
	}
	resp, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+tb.bus.StreamName(), []byte(`{"seq":2}`))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Message *struct{ Seq uint64 } `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &got); err != nil || got.Message == nil || got.Message.Seq != 2 {
		t.Errorf("STREAM.MSG.GET of message 2: %s (%v)", resp.Data, err)
	}

	// What it is refused. Each request waits for its refusal, then gives up.
	refused := func(what, subject string, op func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- op(ctx) }()
		refusals.wait(t, subject)
		cancel()
		if err := <-done; err == nil {
			t.Errorf("%s: succeeded", what)
		}
	}
	s := tb.bus.StreamName()
	refused("publish an event through JetStream", "boxcar.order.placed.forged", func(ctx context.Context) error {
		_, err := js.Publish(ctx, "boxcar.order.placed.forged", []byte("1"))
		return err
	})
	if err := nc.Publish("boxcar.order.placed.forged2", []byte("1")); err != nil {
		t.Fatal(err)
	}
	refusals.wait(t, `Publish to "boxcar.order.placed.forged2"`)
	refused("delete the stream", "$JS.API.STREAM.DELETE."+s, func(ctx context.Context) error { return js.DeleteStream(ctx, s) })
	refused("purge the stream", "$JS.API.STREAM.PURGE."+s, func(ctx context.Context) error { return stream.Purge(ctx) })
	refused("update the stream", "$JS.API.STREAM.UPDATE."+s, func(ctx context.Context) error {
		cfg := stream.CachedInfo().Config
		cfg.MaxAge = time.Second
		_, err := js.UpdateStream(ctx, cfg)
		return err
	})
	refused("delete a message", "$JS.API.STREAM.MSG.DELETE."+s, func(ctx context.Context) error { return stream.DeleteMsg(ctx, 1) })
	refused("create a stream", "$JS.API.STREAM.CREATE.OTHER", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}})
		return err
	})
	refused("delete a consumer", "$JS.API.CONSUMER.DELETE."+s+".ledger", func(ctx context.Context) error { return js.DeleteConsumer(ctx, s, "ledger") })
	refused("create a consumer", "$JS.API.CONSUMER.CREATE."+s, func(ctx context.Context) error {
		_, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "thief", AckPolicy: jetstream.AckExplicitPolicy})
		return err
	})
	refused("fetch a subscriber's messages", "$JS.API.CONSUMER.MSG.NEXT."+s+".ledger", func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+s+".ledger", []byte(`{"batch":1}`))
		return err
	})
	ack := "$JS.ACK." + s + ".ledger.1.1.1.0.0"
	if err := nc.Publish(ack, []byte("+ACK")); err != nil {
		t.Fatal(err)
	}
	refusals.wait(t, `Publish to "`+ack+`"`)
	if err := nc.Publish(ack, []byte("-NAK")); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync("boxcar.>"); err != nil {
		t.Fatal(err)
	}
	refusals.wait(t, `Subscription to "boxcar.>"`)

	// A read request whose reply subject is an event subject: within the
	// bus's account the server would publish its answer into the stream (a
	// direct get's answer is the stored event, headers and all). The
	// inspector's answers stay in its own account.
	for _, api := range []string{"$JS.API.DIRECT.GET." + s, "$JS.API.STREAM.INFO." + s, "$JS.API.STREAM.MSG.GET." + s} {
		if err := nc.PublishRequest(api, "boxcar.order.placed.injected", []byte(`{"seq":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Stream(ctx, s); err != nil { // answered after the injections
		t.Fatal(err)
	}

	// The bus is untouched: its stream holds its own events only, in order,
	// its subscriber goes on.
	publishN(t, tb.bus, "k", 1)
	waitApplied(t, tb.db, "ledger", 4)
	waitRelayed(t, tb.bus, 4)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 4)
	if _, err := tb.bus.js.Consumer(ctx, s, "ledger"); err != nil {
		t.Fatalf("the subscriber's consumer: %v", err)
	}
	if _, err := tb.bus.js.Consumer(ctx, s, "thief"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the inspector's consumer: got %v, want none", err)
	}
	checkExactlyOnceInOrder(t, tb.db, "ledger")
}

// The admin user has every right in the bus's account.
func TestListenAdminHasEveryRight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := NewSecret()
	tb := setup(t, Config{Listen: "127.0.0.1:0", ListenAdminPassword: admin})
	nc, refusals := connectAs(t, tb.bus, ListenAdminUser, admin)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, tb.bus.StreamName()); err != nil {
		t.Fatalf("stream info: %v", err)
	}
	scratch, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCRATCH", Subjects: []string{"scratch.>"}})
	if err != nil {
		t.Fatalf("create a stream: %v", err)
	}
	if _, err := js.Publish(ctx, "scratch.x", []byte("x")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if err := scratch.Purge(ctx); err != nil {
		t.Fatalf("purge: %v", err)
	}
	if err := js.DeleteStream(ctx, "SCRATCH"); err != nil {
		t.Fatalf("delete a stream: %v", err)
	}
	if len(refusals.errs) > 0 {
		t.Fatalf("admin refused: %v", refusals.errs)
	}
}

// Nothing connects to the listener without a valid user and password: no
// credentials, a wrong password, one user's password for another, the old
// token, or the bus's internal user (in-process only, random password).
func TestListenRefusesWithoutCredentials(t *testing.T) {
	t.Parallel()
	inspect, admin := NewSecret(), NewSecret()
	tb := setup(t, Config{Listen: "127.0.0.1:0", ListenInspectPassword: inspect, ListenAdminPassword: admin})
	url := tb.bus.ClientURL()
	for name, opt := range map[string]nats.Option{
		"no credentials":             nil,
		"wrong password":             nats.UserInfo(ListenInspectUser, NewSecret()),
		"inspect with the admin one": nats.UserInfo(ListenInspectUser, admin),
		"admin with the inspect one": nats.UserInfo(ListenAdminUser, inspect),
		"a token":                    nats.Token(inspect),
		"the internal user":          nats.UserInfo("boxcar", inspect),
	} {
		opts := []nats.Option{nats.MaxReconnects(0)}
		if opt != nil {
			opts = append(opts, opt)
		}
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
			continue
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: got %v, want an authorization violation", name, err)
		}
	}
}

// testCA makes a certificate authority and a server certificate for
// 127.0.0.1 signed by it.
func testCA(t *testing.T) (serverCert tls.Certificate, roots *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "boxcar test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}, roots
}

// With Config.ListenTLS the listener speaks TLS only: a client with the CA
// connects, one without it does not, and a client that sends its password
// in clear is refused before it is read.
func TestListenTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cert, roots := testCA(t)
	inspect := NewSecret()
	tb := setup(t, Config{Listen: "127.0.0.1:0", ListenInspectPassword: inspect,
		ListenTLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	publishN(t, tb.bus, "k", 1) // the bus's in-process connection needs no TLS
	waitRelayed(t, tb.bus, 1)
	u, err := url.Parse(tb.bus.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "tls" {
		t.Errorf("client URL %s: want the tls scheme", tb.bus.ClientURL())
	}

	nc, _ := connectAs(t, tb.bus, ListenInspectUser, inspect, nats.Secure(&tls.Config{RootCAs: roots}))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := js.Stream(ctx, tb.bus.StreamName()); err != nil || s.CachedInfo().State.Msgs != 1 {
		t.Fatalf("stream info over TLS: %v", err)
	}
	if state, err := nc.TLSConnectionState(); err != nil || !state.HandshakeComplete {
		t.Fatalf("the connection did not use TLS: %v", err)
	}

	// Without the CA, the server's certificate is not trusted.
	if nc, err := nats.Connect(tb.bus.ClientURL(), nats.UserInfo(ListenInspectUser, inspect), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected without the CA")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: got %v, want a certificate error", err)
	}

	// In clear: the server answers the CONNECT with an error, not a PONG.
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // liveness bound
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("INFO: %q %v", info, err)
	}
	fmt.Fprintf(conn, "CONNECT {\"user\":%q,\"pass\":%q,\"verbose\":false}\r\nPING\r\n", ListenInspectUser, inspect)
	// The server reads the CONNECT as a failed TLS handshake and closes the
	// connection: no PONG, no +OK, and not a timeout.
	rest, err := io.ReadAll(r)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("a plaintext CONNECT: the server kept the connection open (read %q)", rest)
	}
	if bytes.Contains(rest, []byte("PONG")) || bytes.Contains(rest, []byte("+OK")) {
		t.Fatalf("a plaintext CONNECT was served: %q", rest)
	}
}

// Weak or misplaced secrets are refused with ErrInvalidConfig and a message
// that says how to make a good one; NewSecret's pass.
func TestListenAndStoreSecretsValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "app.db"))
	dir := filepath.Join(t.TempDir(), "nats")
	good, other := NewSecret(), NewSecret()
	listen := func(c Config) Config { c.Dir, c.Listen = dir, "127.0.0.1:0"; return c }
	cert, _ := testCA(t)
	for name, c := range map[string]struct {
		cfg  Config
		want string
	}{
		"one character":       {listen(Config{ListenInspectPassword: "x"}), "Config.ListenInspectPassword is 1 characters long: use a random one of 32 characters or more, such as boxcar.NewSecret() returns"},
		"31 characters":       {listen(Config{ListenAdminPassword: good[:31]}), "Config.ListenAdminPassword is 31 characters long"},
		"one repeated":        {listen(Config{ListenInspectPassword: strings.Repeat("a", 64)}), "Config.ListenInspectPassword uses only 1 distinct characters"},
		"a repeated pattern":  {listen(Config{ListenInspectPassword: strings.Repeat("abcdefgh", 5)}), "Config.ListenInspectPassword repeats a pattern of 8 characters"},
		"a bcrypt look-alike": {listen(Config{ListenInspectPassword: "$2a$11$" + good}), "starts with $"},
		"same for both":       {listen(Config{ListenInspectPassword: good, ListenAdminPassword: good}), "Config.ListenAdminPassword equals Config.ListenInspectPassword"},
		"no password":         {listen(Config{}), "no client could log in"},
		"password, no listen": {Config{Dir: dir, ListenInspectPassword: good}, "Config.ListenInspectPassword is set without Config.Listen"},
		"TLS, no listen":      {Config{Dir: dir, ListenTLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, "Config.ListenTLS is set without Config.Listen"},
		"TLS, no certificate": {listen(Config{ListenInspectPassword: good, ListenTLS: &tls.Config{}}), "Config.ListenTLS has no certificate"},
		"weak store key":      {Config{Dir: dir, StoreKey: "secret"}, "Config.StoreKey is 6 characters long"},
		"key = password":      {listen(Config{ListenInspectPassword: good, StoreKey: good}), "Config.StoreKey equals Config.ListenInspectPassword"},
		"cipher, no key":      {Config{Dir: dir, StoreCipher: StoreCipherAESGCM}, "Config.StoreCipher is set without Config.StoreKey"},
		"unknown cipher":      {Config{Dir: dir, StoreKey: good, StoreCipher: "rot13"}, `Config.StoreCipher "rot13"`},
		"key with NATSURL":    {Config{NATSURL: "nats://127.0.0.1:1", StoreKey: good}, "Config.StoreKey is set with Config.NATSURL"},
	} {
		bus, err := Open(ctx, db, c.cfg)
		if err == nil {
			bus.Close(ctx)
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrInvalidConfig containing %q", name, err, c.want)
		}
	}
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		s := NewSecret()
		if err := bjs.CheckSecret("NewSecret()", s); err != nil || seen[s] {
			t.Fatalf("NewSecret() = %q: %v (seen before: %v)", s, err, seen[s])
		}
		seen[s] = true
	}
	bus, err := Open(ctx, db, Config{Dir: dir, Listen: "127.0.0.1:0", ListenInspectPassword: good, ListenAdminPassword: other, StoreKey: NewSecret(), StoreCipher: StoreCipherAESGCM})
	if err != nil {
		t.Fatalf("good secrets: %v", err)
	}
	if err := bus.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// Regression (issue "Nothing stuck, nothing silent", item 15): Dir was
// created 0755. Dir and everything under it (the lock file, nats-server's
// store) is for its owner alone.
func TestDirIsOwnerOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{Dir: filepath.Join(t.TempDir(), "data", "nats")})
	if _, err := tb.bus.Subscribe(ctx, "ledger", recordingHandler("ledger"), SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	publishN(t, tb.bus, "k", 3)
	waitApplied(t, tb.db, "ledger", 3)
	tb.closeBus()
	var blocks, consumers int
	err := filepath.WalkDir(filepath.Dir(tb.cfg.Dir), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s is %v: open to others", path, perm)
		}
		if filepath.Ext(path) == ".blk" {
			blocks++
		}
		if d.IsDir() && filepath.Base(filepath.Dir(path)) == "obs" {
			consumers++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if blocks == 0 || consumers == 0 {
		t.Fatalf("found %d message blocks and %d consumer directories: the walk did not see the store", blocks, consumers)
	}
}

// storeHolds returns the markers found in the files under dir, each with
// the first file that holds it.
func storeHolds(t *testing.T, dir string, markers ...string) map[string]string {
	t.Helper()
	found := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range markers {
			if _, ok := found[m]; !ok && bytes.Contains(b, []byte(m)) {
				found[m] = path
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// With Config.StoreKey, no payload, key or type of an event, nor a
// consumer's filter, can be read in the store's files; the store reopens
// with its key, with its events; and without the key, with another, or with
// another cipher, Open fails and says so, and leaves the store as it was —
// never an empty stream.
func TestStoreKeyEncryptsTheStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tag := strings.ToLower(NewSecret()[:10])
	payload, key, typ := "payload-"+tag, "key-"+tag, "secret.type_"+tag
	filtered := "other.type_" + tag // in a consumer's filter only, never in an event
	markers := []string{payload, key, typ, filtered}
	run := func(bus *Bus, n int) {
		t.Helper()
		var handled sync.Map
		if _, err := bus.Subscribe(ctx, "reader", HandlerFunc(func(ctx context.Context, m Message) error {
			if string(m.Data) != payload || m.Key != key {
				return Permanent(fmt.Errorf("event %s: %q %q", m.ID, m.Key, m.Data))
			}
			handled.Store(m.ID, true)
			return nil
		}), SubscribeOptions{Types: []string{typ, filtered}}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if err := bus.Publish(ctx, Event{Type: typ, Key: key, Data: []byte(payload)}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "the subscriber to read the new events", time.Minute, func() (bool, string) {
			got := 0
			handled.Range(func(any, any) bool { got++; return true })
			return got == n, fmt.Sprint(got)
		})
	}

	// The control: in a store without a key, the scan finds every marker.
	plain := setup(t, Config{})
	run(plain.bus, 3)
	plain.closeBus()
	if found := storeHolds(t, plain.cfg.Dir, markers...); len(found) != len(markers) {
		t.Fatalf("an unencrypted store: found %v of %v: the scan cannot show anything", found, markers)
	}

	storeKey := NewSecret()
	tb := setup(t, Config{StoreKey: storeKey})
	run(tb.bus, 3)
	tb.closeBus()
	if found := storeHolds(t, tb.cfg.Dir, markers...); len(found) > 0 {
		t.Fatalf("an encrypted store holds %v", found)
	}

	for name, c := range map[string]struct {
		key  string
		want string
	}{
		"no key":       {"", "is encrypted (streams BOXCAR, BOXCAR_DLQ) and StoreKey is empty: set StoreKey to the key it was written with"},
		"wrong key":    {NewSecret(), "StoreKey does not open the store"},
		"other cipher": {storeKey, "is encrypted with ChaCha20-Poly1305 and StoreCipher is AES-GCM: set StoreCipher to ChaCha20-Poly1305"},
	} {
		cfg := Config{Dir: tb.cfg.Dir, StoreKey: c.key}
		if name == "other cipher" {
			cfg.StoreCipher = StoreCipherAESGCM
		}
		bus, err := Open(ctx, tb.db, cfg)
		if err == nil {
			bus.Close(ctx)
			t.Fatalf("%s: Open succeeded", name)
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Config.StoreKey") || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: got %v, want ErrInvalidConfig naming the store's encryption and saying %q", name, err, c.want)
		}
	}

	// With its key the store is whole, takes more, and its subscriber's
	// consumer resumes after the events it acked.
	tb.open()
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 3)
	run(tb.bus, 2)
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 5)
}

// Config.StoreKey is refused on a store written without a key: nats-server
// v2.15.3 converts it, but a converted stream's state then fails to load at
// a later start (an empty one is not loaded at all). The store is left as it
// was and opens again without the key.
func TestStoreKeyRefusedOnAnUnencryptedStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setup(t, Config{})
	publishN(t, tb.bus, "k", 3)
	waitRelayed(t, tb.bus, 3)
	tb.closeBus()
	_, err := Open(ctx, tb.db, Config{Dir: tb.cfg.Dir, StoreKey: NewSecret()})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "is not encrypted (streams BOXCAR, BOXCAR_DLQ) and StoreKey is set") {
		t.Fatalf("a key on an unencrypted store: got %v, want ErrInvalidConfig saying the store is not encrypted", err)
	}
	tb.open()
	checkStreamIsOutbox(t, streamEvents(t, tb.bus), 1, 3)
}
