package relay

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the size of the server key that seals channel credentials
// (AES-256).
const KeySize = 32

// Box seals an app's channel credentials for the store with AES-GCM under
// the server key. The key is held here and nowhere else: it is never
// logged, stored beside what it seals, or returned.
type Box struct {
	aead cipher.AEAD
}

// NewBox returns a Box for a KeySize-byte key.
func NewBox(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("relay: the secret key is %d bytes, not %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// ParseKey reads a server key given as 64 hex digits or base64 (standard
// or URL alphabet, padded or not) of KeySize bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KeySize {
			return b, nil
		}
	}
	return nil, fmt.Errorf("relay: a secret key is %d bytes in hex (%d digits) or base64", KeySize, 2*KeySize)
}

// NewKey returns a fresh random server key, hex-encoded as ParseKey reads it.
func NewKey() string { return hex.EncodeToString(randomBytes(KeySize)) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return b
}

// ErrUnreadable is what Open says for any failure: which part of a sealed
// value was wrong is of no use to anyone but an attacker. Settings sealed
// under another server key (changed, or different between nodes) give it.
var ErrUnreadable = errors.New("relay: sealed credentials do not open with this server's secret key")

// Seal encrypts plain, bound to label (the app and channel it belongs to,
// so that one app's sealed credentials cannot be moved to another's).
func (b *Box) Seal(plain []byte, label string) []byte {
	nonce := randomBytes(b.aead.NonceSize())
	return b.aead.Seal(nonce, nonce, plain, []byte(label))
}

// Open decrypts what Seal returned for label.
func (b *Box) Open(sealed []byte, label string) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, ErrUnreadable
	}
	plain, err := b.aead.Open(nil, sealed[:n], sealed[n:], []byte(label))
	if err != nil {
		return nil, ErrUnreadable
	}
	return plain, nil
}
