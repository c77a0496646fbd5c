package jetstream

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// The ciphers of ServerConfig.StoreCipher: nats-server's names of its
// store ciphers.
const (
	// CipherChaCha20Poly1305 is nats-server's default: fast in software,
	// with no need for AES instructions.
	CipherChaCha20Poly1305 = "ChaCha20-Poly1305"
	// CipherAESGCM is faster on CPUs with AES instructions.
	CipherAESGCM = "AES-GCM"
)

// ErrStoreKey is returned by Start when the store's encryption settings do
// not fit the store: it is encrypted and ServerConfig.StoreKey is missing or
// wrong, it is not encrypted and StoreKey is set, or StoreCipher is not the
// cipher it was written with. Nothing was changed: the store opens again
// with the settings it was written with.
var ErrStoreKey = errors.New("the store key does not open the store")

// storeKeyError is an ErrStoreKey with what was found.
type storeKeyError struct{ msg string }

func (e *storeKeyError) Error() string { return "jetstream: " + e.msg }
func (e *storeKeyError) Unwrap() error { return ErrStoreKey }

// storeCipher maps a ServerConfig.StoreCipher to nats-server's cipher.
func storeCipher(name string) (server.StoreCipher, error) {
	switch name {
	case CipherChaCha20Poly1305:
		return server.ChaCha, nil
	case CipherAESGCM:
		return server.AES, nil
	}
	return 0, fmt.Errorf("jetstream: StoreCipher %q: use %q or %q", name, CipherChaCha20Poly1305, CipherAESGCM)
}

// streamsDir is where nats-server keeps the streams of the bus's account
// under its StoreDir (server.Options.StoreDir).
func streamsDir(storeDir string) string {
	return filepath.Join(storeDir, server.JetStreamStoreDir, server.DEFAULT_GLOBAL_ACCOUNT, "streams")
}

// storeStreams lists the streams in storeDir whose files are encrypted
// (nats-server writes a key file, meta.key, beside an encrypted stream's
// metadata, meta.inf) and those whose files are not.
func storeStreams(storeDir string) (encrypted, plain []string) {
	dir := streamsDir(storeDir)
	entries, _ := os.ReadDir(dir) // none yet: a new store
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") { // ".name": a stream being deleted
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), server.JetStreamMetaFileKey)); err == nil {
			encrypted = append(encrypted, e.Name())
		} else if _, err := os.Stat(filepath.Join(dir, e.Name(), server.JetStreamMetaFile)); err == nil {
			plain = append(plain, e.Name())
		}
	}
	return encrypted, plain
}

// cipherFileName is the file, in the store directory, that records the
// cipher of an encrypted store: nats-server does not say which one a store
// uses, and it must not be changed (see checkStoreKeyBefore).
const cipherFileName = "boxcar.cipher"

// checkStoreKeyBefore refuses to start the server on a store that its
// encryption settings would not open, or would damage:
//   - an encrypted store without a key: nats-server would skip its streams,
//     with a warning in its log, and then refuse to create them again
//     ("error creating store for stream"), so the bus would fail later and
//     less clearly;
//   - an unencrypted store with a key, or an encrypted one with another
//     cipher: nats-server converts the store at that start, but on v2.15.3
//     a converted stream's state does not load at the next start ("Stream
//     state error reading encryption key", "Stream state magic and version
//     mismatch"), and an empty stream (the dead-letter stream, often) is
//     then not loaded at all: "corrupt state file".
func checkStoreKeyBefore(dir, storeDir, key, cipher string) error {
	encrypted, plain := storeStreams(storeDir)
	switch {
	case key == "" && len(encrypted) > 0:
		return &storeKeyError{fmt.Sprintf("the store in %s is encrypted (streams %s) and StoreKey is empty: set StoreKey to the key it was written with", storeDir, strings.Join(encrypted, ", "))}
	case key != "" && len(plain) > 0:
		return &storeKeyError{fmt.Sprintf("the store in %s is not encrypted (streams %s) and StoreKey is set: nats-server's conversion of an existing store is not reliable (a converted stream may not load at a later start), so encrypt a new store instead: remove StoreKey, or set it with a new, empty directory", storeDir, strings.Join(plain, ", "))}
	case key != "" && len(encrypted) > 0:
		was, err := os.ReadFile(filepath.Join(dir, cipherFileName))
		if err == nil && strings.TrimSpace(string(was)) != cipher {
			return &storeKeyError{fmt.Sprintf("the store in %s is encrypted with %s and StoreCipher is %s: set StoreCipher to %s (nats-server's conversion to another cipher is not reliable)", storeDir, strings.TrimSpace(string(was)), cipher, strings.TrimSpace(string(was)))}
		}
	}
	return nil
}

// recordCipher records the cipher of an encrypted store.
func recordCipher(dir, key, cipher string) error {
	if key == "" {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, cipherFileName), []byte(cipher+"\n"), 0o600); err != nil {
		return fmt.Errorf("jetstream: record the store's cipher: %w", err)
	}
	return nil
}

// checkStoreKeyAfter checks, on a started server, that every encrypted
// stream on disk was loaded: with a wrong key nats-server skips them (its
// log says "Error decrypting our stream metafile: unable to recover keys")
// and leaves their files as they were.
func checkStoreKeyAfter(srv *server.Server, storeDir string) error {
	enc, _ := storeStreams(storeDir)
	if len(enc) == 0 {
		return nil
	}
	acc, err := srv.JszAccount(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true})
	if err != nil {
		return fmt.Errorf("jetstream: check the store's streams: %w", err)
	}
	var loaded []string
	for _, s := range acc.Streams {
		loaded = append(loaded, s.Name)
	}
	var missing []string
	for _, name := range enc {
		if !slices.Contains(loaded, name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return &storeKeyError{fmt.Sprintf("StoreKey does not open the store in %s: the server could not decrypt streams %s; set StoreKey to the key they were written with (if it is that key, their files are damaged: the server's log says more)", storeDir, strings.Join(missing, ", "))}
	}
	return nil
}
