package jetstream

import (
	"strings"
	"testing"
)

// FuzzKeySubjectRoundTrip: every key ValidateKey accepts becomes one safe
// subject token (no '.', wildcard or whitespace, which would split or widen
// the subject) that decodes back to exactly the key, and every subject built
// from a valid type and key parses back to exactly them.
func FuzzKeySubjectRoundTrip(f *testing.F) {
	for _, k := range []string{"k1", "user-42_x", "user.42", "a b", "*", ">", "a.*.>", "ключ", "🚀", "~", "~abc",
		"~" + "YQ", "-", "_", "\x00", "\t", "tab\there", strings.Repeat("x", MaxKeyLen), strings.Repeat("é", MaxKeyLen/2), "\xff"} {
		f.Add("order.placed", k)
	}
	f.Add("a", "k")
	f.Add("a.b.c.d-e_f", "k")
	f.Fuzz(func(t *testing.T, typ, key string) {
		tok := EncodeKey(key)
		if ValidateKey(key) != nil {
			return
		}
		if tok == "" || strings.ContainsAny(tok, ". *>\t\r\n") {
			t.Fatalf("key %q encodes to %q, not one safe subject token", key, tok)
		}
		back, err := DecodeKey(tok)
		if err != nil || back != key {
			t.Fatalf("key %q -> token %q -> %q, %v", key, tok, back, err)
		}
		if ValidateType(typ) != nil {
			return
		}
		subject := Subject("boxcar", typ, key)
		gotType, gotKey, err := ParseSubject("boxcar", subject)
		if err != nil || gotType != typ || gotKey != key {
			t.Fatalf("type %q key %q -> subject %q -> type %q key %q, %v", typ, key, subject, gotType, gotKey, err)
		}
		if !strings.HasPrefix(subject, TypeFilter("boxcar", typ)[:len(TypeFilter("boxcar", typ))-1]) {
			t.Fatalf("subject %q is not matched by its type's filter %q", subject, TypeFilter("boxcar", typ))
		}
	})
}

// FuzzDecodeKey: whatever token arrives in a subject, DecodeKey does not
// panic, and a token it accepts is the one canonical encoding of its key
// (so two different tokens never name the same key).
func FuzzDecodeKey(f *testing.F) {
	for _, tok := range []string{"k1", "~dXNlci40Mg", "~", "~~", "~YQ", "~YQ==", "~Y", "a.b", "*", ">", "", "~_-_", "~AAAA"} {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		key, err := DecodeKey(tok)
		if err != nil {
			return
		}
		if got := EncodeKey(key); got != tok {
			t.Fatalf("token %q decodes to %q, which encodes to %q", tok, key, got)
		}
	})
}

// FuzzParseSubject: any subject parses without panic; one it accepts is
// rebuilt exactly from its type and key.
func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"boxcar.order.placed.k1", "boxcar.order.placed.~dXNlci40Mg", "boxcar.order", "boxcar.", "boxcar..k",
		"boxcar.order.placed.", "other.order.placed.k", "boxcar.a.b.c.d.~", "boxcar.*.>", "boxcarx.a.k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		typ, key, err := ParseSubject("boxcar", subject)
		if err != nil {
			return
		}
		if got := Subject("boxcar", typ, key); got != subject {
			t.Fatalf("subject %q parsed as type %q key %q, which build %q", subject, typ, key, got)
		}
	})
}
