package jetstream

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on the parts of a subject.
const (
	MaxTypeLen = 255 // bytes of an event type
	MaxKeyLen  = 512 // bytes of a raw key
)

// ErrInvalidType and ErrInvalidKey are wrapped by the validation errors below.
var (
	ErrInvalidType = errors.New("invalid event type")
	ErrInvalidKey  = errors.New("invalid event key")
)

// ValidateType checks an event type: one or more dot-separated tokens of
// ASCII letters, digits, '_' and '-', at most MaxTypeLen bytes, e.g.
// "user.signed_up". Types become subject tokens, so wildcards and spaces are
// refused rather than encoded: a subscriber filters on them.
func ValidateType(t string) error {
	if t == "" {
		return fmt.Errorf("%w: type is empty: name it like \"user.signed_up\"", ErrInvalidType)
	}
	if len(t) > MaxTypeLen {
		return fmt.Errorf("%w: type is %d bytes, the limit is %d", ErrInvalidType, len(t), MaxTypeLen)
	}
	for tok := range strings.SplitSeq(t, ".") {
		if tok == "" {
			return fmt.Errorf("%w: type %q has an empty token: tokens are separated by single dots", ErrInvalidType, t)
		}
		for i := 0; i < len(tok); i++ {
			if !plainByte(tok[i]) {
				return fmt.Errorf("%w: type %q has %q: use ASCII letters, digits, '_' and '-' between dots", ErrInvalidType, t, rune(tok[i]))
			}
		}
	}
	return nil
}

// ValidateKey checks an event key: non-empty, valid UTF-8, at most MaxKeyLen
// bytes. Any character is allowed (dots, spaces, '*', '>', unicode): the key
// is encoded into one safe subject token.
func ValidateKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: key is empty: set it to the entity the event is about (e.g. the user ID); events of one key are handled in order", ErrInvalidKey)
	}
	if len(k) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidKey, len(k), MaxKeyLen)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("%w: key is not valid UTF-8", ErrInvalidKey)
	}
	return nil
}

func plainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// encodedMark starts every encoded key token. It is not a plain byte, so a
// token starting with it can only come from EncodeKey's second form.
const encodedMark = '~'

// EncodeKey turns a key into one subject token. Keys made only of ASCII
// letters, digits, '_' and '-' stay as they are, so subjects stay readable for
// the common case; any other key becomes '~' + unpadded base64url of its
// bytes. The mapping is one-to-one; DecodeKey inverts it.
func EncodeKey(k string) string {
	plain := k != ""
	for i := 0; i < len(k) && plain; i++ {
		plain = plainByte(k[i])
	}
	if plain {
		return k
	}
	return string(encodedMark) + base64.RawURLEncoding.EncodeToString([]byte(k))
}

// DecodeKey inverts EncodeKey. It refuses tokens EncodeKey cannot produce.
func DecodeKey(tok string) (string, error) {
	if tok == "" {
		return "", fmt.Errorf("%w: empty subject token", ErrInvalidKey)
	}
	if tok[0] != encodedMark {
		for i := 0; i < len(tok); i++ {
			if !plainByte(tok[i]) {
				return "", fmt.Errorf("%w: token %q has %q", ErrInvalidKey, tok, rune(tok[i]))
			}
		}
		return tok, nil
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok[1:])
	if err != nil {
		return "", fmt.Errorf("%w: token %q: %v", ErrInvalidKey, tok, err)
	}
	k := string(b)
	if k == "" {
		return "", fmt.Errorf("%w: token %q encodes an empty key", ErrInvalidKey, tok)
	}
	if EncodeKey(k) != tok {
		// Keys that are plain must be sent plain, so every key has one token.
		return "", fmt.Errorf("%w: token %q is not the canonical encoding of its key", ErrInvalidKey, tok)
	}
	return k, nil
}

// The subject layout of the event stream, version 2 (LayoutVersion), the
// one place it is decided:
//
//		<prefix>.<origin>.<partition>.<type…>.<key>
//
//	  - origin: the instance that published the event (Config.InstanceID): the
//	    writer's own subtree, on which the relay chains its publishes when
//	    several instances write into one stream (Nats-Expected-Last-Subject-
//	    Sequence with the subject <prefix>.<origin>.>).
//	  - partition: the key's partition, decimal, 0 to Partitions-1: FNV-1a
//	    (32 bits) of the key's subject token, modulo Partitions: the hash
//	    nats-server's {{partition(n,i)}} subject mapping computes over that
//	    token. At a fixed position, so that consumers can filter on it and
//	    subject transforms can pick it: the key-derived token that work
//	    sharing needs (the type before it has a variable number of tokens).
//	  - type: one or more tokens (ValidateType).
//	  - key: one token (EncodeKey).
//
// Version 1 (Boxcar before scale-out) was <prefix>.<type…>.<key>: its key
// cannot be picked by position, and a stream of it is upgraded at Open (see
// the root package's upgrade.go). A stream records its layout and partition
// count in its metadata (MetaLayout, MetaPartitions).
const LayoutVersion = 2

// Metadata keys of the event stream's configuration.
const (
	MetaLayout     = "boxcar_layout"     // the subject layout version, decimal
	MetaPartitions = "boxcar_partitions" // Layout.Partitions, decimal
)

// MaxPartitions bounds Layout.Partitions.
const MaxPartitions = 1024

// Layout builds and parses the subjects of one stream.
type Layout struct {
	Prefix     string // the subjects' first token, e.g. "boxcar"
	Partitions int    // how many partitions keys hash into, 1 to MaxPartitions
}

// Partition is the partition of key among n: FNV-1a-32 of its subject token
// modulo n, as nats-server's partition(n, i) mapping computes it.
func Partition(key string, n int) int {
	tok := EncodeKey(key)
	h := uint32(2166136261)
	for i := 0; i < len(tok); i++ {
		h ^= uint32(tok[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// Subject returns prefix.origin.partition.type.encodedKey.
func (l Layout) Subject(origin, typ, key string) string {
	tok := EncodeKey(key)
	return l.Prefix + "." + origin + "." + strconv.Itoa(Partition(key, l.Partitions)) + "." + typ + "." + tok
}

// All is the filter that matches every event of the stream.
func (l Layout) All() string { return l.Prefix + ".>" }

// OriginFilter matches every event origin published: its subtree.
func (l Layout) OriginFilter(origin string) string { return l.Prefix + "." + origin + ".>" }

// TypeFilter matches every event of typ, of any origin, partition and key.
func (l Layout) TypeFilter(typ string) string { return l.Prefix + ".*.*." + typ + ".*" }

// PartitionFilter matches the events of partition p, of typ (every type
// when typ is "").
func (l Layout) PartitionFilter(p int, typ string) string {
	if typ == "" {
		return l.Prefix + ".*." + strconv.Itoa(p) + ".>"
	}
	return l.Prefix + ".*." + strconv.Itoa(p) + "." + typ + ".*"
}

// Parsed is a subject of the layout, read back.
type Parsed struct {
	Origin    string
	Partition int
	Type      string
	Key       string
}

// Parse reads a subject Subject builds. It refuses anything else: another
// prefix, a bad token, a partition that is not the key's.
func (l Layout) Parse(subject string) (Parsed, error) {
	rest, ok := strings.CutPrefix(subject, l.Prefix+".")
	if !ok {
		return Parsed{}, fmt.Errorf("subject %q does not start with %q", subject, l.Prefix+".")
	}
	origin, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return Parsed{}, fmt.Errorf("subject %q has no partition token", subject)
	}
	if err := ValidateToken("origin", origin); err != nil {
		return Parsed{}, fmt.Errorf("subject %q: %w", subject, err)
	}
	ptok, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return Parsed{}, fmt.Errorf("subject %q has no type token", subject)
	}
	p, err := strconv.Atoi(ptok)
	if err != nil || p < 0 || p >= l.Partitions || strconv.Itoa(p) != ptok {
		return Parsed{}, fmt.Errorf("subject %q: partition token %q is not a partition of %d", subject, ptok, l.Partitions)
	}
	typ, key, err := splitTypeKey(subject, rest)
	if err != nil {
		return Parsed{}, err
	}
	if want := Partition(key, l.Partitions); want != p {
		return Parsed{}, fmt.Errorf("subject %q: key %q is in partition %d, not %d", subject, key, want, p)
	}
	return Parsed{Origin: origin, Partition: p, Type: typ, Key: key}, nil
}

// splitTypeKey splits "type….keyToken" into the type and the raw key.
func splitTypeKey(subject, rest string) (typ, key string, err error) {
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", "", fmt.Errorf("subject %q has no key token", subject)
	}
	typ = rest[:i]
	if err := ValidateType(typ); err != nil {
		return "", "", fmt.Errorf("subject %q: %w", subject, err)
	}
	key, err = DecodeKey(rest[i+1:])
	if err != nil {
		return "", "", fmt.Errorf("subject %q: %w", subject, err)
	}
	return typ, key, nil
}

// LegacySubject and ParseLegacySubject are layout 1, prefix.type.keyToken:
// what a stream written before the current layout holds (see
// LayoutVersion). Only the upgrade, and dead letters of that time, use them.
func LegacySubject(prefix, typ, key string) string {
	return prefix + "." + typ + "." + EncodeKey(key)
}

// ParseLegacySubject splits a layout-1 subject into type and raw key.
func ParseLegacySubject(prefix, subject string) (typ, key string, err error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return "", "", fmt.Errorf("subject %q does not start with %q", subject, prefix+".")
	}
	return splitTypeKey(subject, rest)
}

// ValidateToken checks a name used as one subject token and as a JetStream
// name (stream, consumer, subscriber, subject prefix): ASCII letters, digits,
// '_' and '-', 1 to 64 bytes.
func ValidateToken(what, s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("%s %q must be 1 to 64 bytes", what, s)
	}
	for i := 0; i < len(s); i++ {
		if !plainByte(s[i]) {
			return fmt.Errorf("%s %q has %q: use ASCII letters, digits, '_' and '-'", what, s, rune(s[i]))
		}
	}
	return nil
}
