package jetstream

import (
	"errors"
	"net/textproto"
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
	typ, key, err := ParseSubject("boxcar", Subject("boxcar", "user.signed_up", "a.b c"))
	if err != nil || typ != "user.signed_up" || key != "a.b c" {
		t.Fatalf("got %q %q %v", typ, key, err)
	}
	for _, bad := range []string{"other.user.k", "boxcar.k", "boxcar..k", "boxcar.user.a b", "boxcar"} {
		if _, _, err := ParseSubject("boxcar", bad); err == nil {
			t.Errorf("ParseSubject(%q) accepted", bad)
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
