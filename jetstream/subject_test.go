package jetstream

import (
	"context"
	"errors"
	"net/textproto"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestKeyEncodingRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ key, token string }{
		{"user-42", "user-42"},
		{"A_b-9", "A_b-9"},
		{"a.b", "~YS5i"},
		{"*", "~Kg"},
		{">", "~Pg"},
		{"with space", "~d2l0aCBzcGFjZQ"},
		{"~x", "~fng"},
		{"ünï", "~w7xuw68"},
	} {
		tok := EncodeKey(c.key)
		if tok != c.token {
			t.Errorf("EncodeKey(%q) = %q, want %q", c.key, tok, c.token)
		}
		if strings.ContainsAny(tok, ".*> \t") {
			t.Errorf("token %q is not a safe subject token", tok)
		}
		back, err := DecodeKey(tok)
		if err != nil || back != c.key {
			t.Errorf("DecodeKey(%q) = %q, %v; want %q", tok, back, err, c.key)
		}
	}
}

func TestDecodeKeyRefusesNonCanonical(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", "a.b", "~", "~!!", "~YWJj", "a b", "~YS5i="} {
		// "~YWJj" is "abc", which must travel plain.
		if k, err := DecodeKey(tok); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("DecodeKey(%q) = %q, %v; want ErrInvalidKey", tok, k, err)
		}
	}
}

func TestValidateType(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "user.signed_up", "Order-v2.placed"} {
		if err := ValidateType(ok); err != nil {
			t.Errorf("ValidateType(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>", "ü", strings.Repeat("a", MaxTypeLen+1)} {
		if err := ValidateType(bad); !errors.Is(err, ErrInvalidType) {
			t.Errorf("ValidateType(%q) = %v, want ErrInvalidType", bad, err)
		}
	}
}

func TestParseSubject(t *testing.T) {
	t.Parallel()
	l := Layout{Prefix: "boxcar", Partitions: 64}
	subject := l.Subject("billing", "user.signed_up", "a.b c")
	p := Partition("a.b c", 64)
	if want := "boxcar.billing." + strconv.Itoa(p) + ".user.signed_up.~YS5iIGM"; subject != want {
		t.Fatalf("subject %q, want %q", subject, want)
	}
	got, err := l.Parse(subject)
	if err != nil || got != (Parsed{Origin: "billing", Partition: p, Type: "user.signed_up", Key: "a.b c"}) {
		t.Fatalf("got %+v %v", got, err)
	}
	wrongP := strconv.Itoa((p + 1) % 64)
	for _, bad := range []string{"other.o.1.user.k", "boxcar.k", "boxcar.o.k", "boxcar.o.1.k", "boxcar.o..user.k", "boxcar.o.64.user.k",
		"boxcar.o.-1.user.k", "boxcar.o.01.user.k", "boxcar.o.x.user.k", "boxcar.o b.1.user.k", "boxcar.billing." + wrongP + ".user.signed_up.~YS5iIGM",
		"boxcar.user.signed_up.k" /* layout 1 */, "boxcar"} {
		if _, err := l.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	typ, key, err := ParseLegacySubject("boxcar", LegacySubject("boxcar", "user.signed_up", "a.b c"))
	if err != nil || typ != "user.signed_up" || key != "a.b c" {
		t.Fatalf("legacy: got %q %q %v", typ, key, err)
	}
}

// Partition is nats-server's own partition(n, i) subject mapping over the
// key's token: a stream transform computing it on the server agrees with
// the subject the relay builds (checked against a real server).
func TestPartitionIsTheServersMapping(t *testing.T) {
	t.Parallel()
	srv, err := Start(ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 16
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"in.*"},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: "in.*", Destination: "out.{{partition(16,1)}}.{{wildcard(1)}}"}})
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"k1", "user-42", "a.b c", "ünï", "*", strings.Repeat("x", MaxKeyLen)}
	for i := range 200 {
		keys = append(keys, "key-"+strconv.Itoa(i))
	}
	for _, k := range keys {
		ack, err := js.Publish(ctx, "in."+EncodeKey(k), nil)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		if want := "out." + strconv.Itoa(Partition(k, n)) + "." + EncodeKey(k); m.Subject != want {
			t.Fatalf("key %q: the server mapped it to %q, Partition says %q", k, m.Subject, want)
		}
	}
}

// Publisher.Send stores Boxcar's header names directly, without Set's
// canonicalization: they must already be canonical, or a reader's Get would
// miss them.
func TestHeaderNamesAreCanonical(t *testing.T) {
	for _, h := range []string{HeaderSeq, HeaderType, HeaderKey, HeaderTime, jetstream.MsgIDHeader, jetstream.ExpectedLastMsgIDHeader} {
		if c := textproto.CanonicalMIMEHeaderKey(h); c != h {
			t.Errorf("header %q is not canonical (%q)", h, c)
		}
	}
}
