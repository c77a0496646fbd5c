package boxcarwm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	bjs "github.com/boxcar-bus/boxcar/jetstream"
)

// validateTopic checks that topic can be an event type as it is (see
// Publisher): Boxcar's own rule, from the wire codec.
func validateTopic(topic string) error {
	if err := bjs.ValidateType(topic); err != nil {
		return fmt.Errorf("%w %q: a topic is a Boxcar event type, dot-separated tokens of ASCII letters, digits, '_' and '-': %w", ErrInvalidTopic, topic, err)
	}
	return nil
}

// validateHeader checks a metadata entry against Boxcar's header rule, so
// that a message is refused, naming its UUID, before any of its call is
// written. Boxcar checks again at PublishTx, with the sizes.
func validateHeader(k, v string) error { return bjs.ValidateHeader(k, v) }

// SubscriberName returns the name of the Boxcar subscriber that serves
// consumer group group on topic: what Bus.Stats and the boxcar tools show.
// It is deterministic (the same topic and group give the same durable
// subscriber after a restart) and one-to-one in practice: a readable part
// of each (characters outside ASCII letters, digits, '_' and '-' become
// '_') and 64 bits of the SHA-256 of both, within Boxcar's 64-byte limit.
func SubscriberName(topic, group string) string {
	sum := sha256.Sum256([]byte(group + "\x00" + topic))
	return "wm-" + readable(group, 20) + "-" + readable(topic, 22) + "-" + hex.EncodeToString(sum[:8])
}

func readable(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}
