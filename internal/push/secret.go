package push

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
)

// NewID returns prefix followed by n random bytes in unpadded base64url: an
// identifier that is URL-safe and unguessable.
func NewID(prefix string, n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand documents it)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Sizes of generated identifiers and secrets, in random bytes.
const (
	RegistrationIDBytes = 18 // 144 bits
	SecretBytes         = 32 // 256 bits
	AppKeyBytes         = 16
	MessageIDBytes      = 16
)

// NewRegistrationID returns a new device registration ID.
func NewRegistrationID() string { return NewID("", RegistrationIDBytes) }

// NewSecret returns a new master or device secret.
func NewSecret() string { return NewID("", SecretBytes) }

// NewAppKey returns a new public app key.
func NewAppKey() string { return NewID("ak_", AppKeyBytes) }

// NewMessageID returns a new message ID.
func NewMessageID() string { return NewID("m_", MessageIDBytes) }

// HashSecret returns the form a secret is stored in. Secrets are 256 random
// bits, so a fast hash is enough: there is nothing to brute-force.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// SecretMatches reports, in constant time, whether secret hashes to hash.
func SecretMatches(secret string, hash []byte) bool {
	h := sha256.Sum256([]byte(secret))
	return len(hash) == len(h) && subtle.ConstantTimeCompare(h[:], hash) == 1
}
