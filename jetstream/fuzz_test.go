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
		l := Layout{Prefix: "boxcar", Partitions: 64}
		subject := l.Subject("main", typ, key)
		got, err := l.Parse(subject)
		if err != nil || got.Type != typ || got.Key != key || got.Origin != "main" || got.Partition != Partition(key, 64) {
			t.Fatalf("type %q key %q -> subject %q -> %+v, %v", typ, key, subject, got, err)
		}
		for _, filter := range []string{l.TypeFilter(typ), l.PartitionFilter(got.Partition, typ), l.PartitionFilter(got.Partition, ""), l.OriginFilter("main")} {
			if !subjectMatches(filter, subject) {
				t.Fatalf("subject %q is not matched by the filter %q", subject, filter)
			}
		}
		if subjectMatches(l.PartitionFilter((got.Partition+1)%64, ""), subject) {
			t.Fatalf("subject %q is matched by another partition's filter", subject)
		}
		typ1, key1, err := ParseLegacySubject("boxcar", LegacySubject("boxcar", typ, key))
		if err != nil || typ1 != typ || key1 != key {
			t.Fatalf("legacy: type %q key %q -> %q %q, %v", typ, key, typ1, key1, err)
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

// subjectMatches reports whether filter (NATS wildcards * and >) matches
// subject.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}

// FuzzParseSubject: any subject parses without panic; one it accepts is
// rebuilt exactly from its origin, type and key.
func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"boxcar.main.17.order.placed.k1", "boxcar.o.0.order.placed.~dXNlci40Mg", "boxcar.o.99.a.k", "boxcar.o.1.a",
		"boxcar.order.placed.k1", "boxcar.order.placed.~dXNlci40Mg", "boxcar.order", "boxcar.", "boxcar..k",
		"boxcar.order.placed.", "other.order.placed.k", "boxcar.a.b.c.d.~", "boxcar.*.>", "boxcarx.a.k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		l := Layout{Prefix: "boxcar", Partitions: 64}
		p, err := l.Parse(subject)
		if err != nil {
			return
		}
		if got := l.Subject(p.Origin, p.Type, p.Key); got != subject {
			t.Fatalf("subject %q parsed as %+v, which builds %q", subject, p, got)
		}
	})
}
