package jetstream

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// MinSecretLen is the shortest password or store key Start accepts.
const MinSecretLen = 32

// NewSecret returns a random secret for a listener password or a store key:
// 32 bytes from crypto/rand (256 bits), base64url without padding, so 43
// characters that need no quoting in a shell or a URL.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// CheckSecret refuses a secret that is easy to guess: shorter than
// MinSecretLen, with fewer than 8 distinct characters, or repeating a
// shorter pattern ("abcdabcd..."). It cannot see every weak secret (a
// dictionary phrase passes); NewSecret's pass always. field names the
// setting in the error.
func CheckSecret(field, s string) error {
	const fix = "use a random one of 32 characters or more, such as boxcar.NewSecret() returns"
	if n := len(s); n < MinSecretLen {
		return fmt.Errorf("%s is %d characters long: %s", field, n, fix)
	}
	distinct := map[rune]bool{}
	for _, r := range s {
		distinct[r] = true
	}
	if len(distinct) < 8 {
		return fmt.Errorf("%s uses only %d distinct characters: %s", field, len(distinct), fix)
	}
	for p := 1; p <= len(s)/2; p++ {
		if strings.Repeat(s[:p], len(s)/p+1)[:len(s)] == s {
			return fmt.Errorf("%s repeats a pattern of %d characters: %s", field, p, fix)
		}
	}
	if strings.HasPrefix(s, "$") {
		// nats-server takes a password of the form $2a$... for a bcrypt
		// hash; one that starts with $ is refused so that no password is
		// silently read as a hash.
		return fmt.Errorf("%s starts with $, which nats-server may read as a bcrypt hash: %s", field, fix)
	}
	return nil
}
