package server

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrAdminToken is an admin token that cannot be used: too weak, unreadable
// or malformed.
var ErrAdminToken = errors.New("server: admin token")

// minAdminTokenBits is the least strength an admin token may have: the
// admin token creates apps, so it is worth as much as every app's secret.
const minAdminTokenBits = 128

// maxAdminTokenFile bounds what --admin-token-file may hold.
const maxAdminTokenFile = 4 << 10

// tokenBits estimates, conservatively, the strength of a token from its
// length and the smallest usual alphabet it is written in: 3.3 bits a
// character for decimal digits, 4 for hex, 6 for base64 or base64url
// (padding carries none), 6.5 for anything else (printable ASCII has 95
// characters); and a token of fewer than 8 distinct characters is rated by
// how many it has, whatever its alphabet. It cannot tell a random token
// from a pattern; it stops the short ones, as a password policy does.
func tokenBits(tok string) float64 {
	body, perChar := tok, 6.5
	switch unpadded := strings.TrimRight(tok, "="); {
	case all(tok, func(r rune) bool { return r >= '0' && r <= '9' }):
		perChar = math.Log2(10)
	case all(tok, isHexDigit):
		perChar = 4
	case all(unpadded, isBase64):
		body, perChar = unpadded, 6
	}
	// The least number of distinct characters a random token of the
	// lengths in use here shows by chance is well above 8.
	seen := map[rune]bool{}
	for _, r := range body {
		seen[r] = true
	}
	if len(seen) < 8 {
		perChar = min(perChar, math.Log2(float64(max(len(seen), 1))))
	}
	return perChar * float64(utf8.RuneCountInString(body))
}

func all(s string, f func(rune) bool) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return !f(r) })
}

func isHexDigit(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F'
}

// isBase64 is the union of the standard and URL-safe base64 alphabets.
func isBase64(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || strings.ContainsRune("+/-_", r)
}

// checkAdminToken refuses a token that is too weak to guard the admin API,
// or that a client could not send: source says where it came from.
func checkAdminToken(tok, source string) error {
	if strings.ContainsFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fmt.Errorf("%w from %s: it contains spaces or control characters, which an Authorization header cannot carry intact", ErrAdminToken, source)
	}
	if bits := tokenBits(tok); bits < minAdminTokenBits {
		return fmt.Errorf("%w from %s: %d characters are about %.0f bits, and it needs %d; "+
			"make one with `openssl rand -hex 16` (or leave the admin token unset and Herald generates one in the data directory)",
			ErrAdminToken, source, utf8.RuneCountInString(tok), bits, minAdminTokenBits)
	}
	return nil
}

// readAdminTokenFile reads the admin token from path, without its trailing
// newline. A file that others may read is used, with a warning: secrets
// that Kubernetes and Docker mount are 0644 and 0444 by default, and there
// the container is the boundary; on a shared host it is a leak.
func (s *Server) readAdminTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: admin-token-file: %v", ErrAdminToken, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: admin-token-file: %v", ErrAdminToken, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: admin-token-file %s is not a regular file", ErrAdminToken, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		s.log.Warn("the admin token file is open to users other than its owner; chmod 600 it",
			"path", path, "mode", fmt.Sprintf("%04o", perm))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxAdminTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("%w: admin-token-file: %v", ErrAdminToken, err)
	}
	if len(b) > maxAdminTokenFile {
		return "", fmt.Errorf("%w: admin-token-file %s is over %d bytes; it should hold the token alone", ErrAdminToken, path, maxAdminTokenFile)
	}
	tok := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if tok == "" {
		return "", fmt.Errorf("%w: admin-token-file %s is empty", ErrAdminToken, path)
	}
	return tok, nil
}
