package jetstream

import (
	"encoding/base64"
	"errors"
	"fmt"
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

// Subject returns prefix.type.encodedKey.
func Subject(prefix, typ, key string) string {
	return prefix + "." + typ + "." + EncodeKey(key)
}

// TypeFilter returns the subject filter that matches every key of typ.
func TypeFilter(prefix, typ string) string {
	return prefix + "." + typ + ".*"
}

// ParseSubject splits prefix.type.keyToken back into type and raw key.
func ParseSubject(prefix, subject string) (typ, key string, err error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return "", "", fmt.Errorf("subject %q does not start with %q", subject, prefix+".")
	}
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
