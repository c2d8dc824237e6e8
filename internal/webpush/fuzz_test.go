package webpush

import (
	"crypto/ecdh"
	"errors"
	"strings"
	"testing"
)

// FuzzParseVAPID feeds the VAPID header parser arbitrary Authorization and
// Crypto-Key values (seeds in testdata/fuzz/FuzzParseVAPID). It must never
// panic, must fail with exactly one of its two errors, and what it accepts
// must be well-formed and survive a round trip, as net/netip.FuzzParse
// checks: credentials written back in either form parse to the same
// credentials. Verify must take whatever the parser accepts without
// panicking.
func FuzzParseVAPID(f *testing.F) {
	f.Add("vapid t=a.b.c, k=BAAA", "")
	f.Add("WebPush a.b.c", "p256ecdsa=BAAA")
	f.Fuzz(func(t *testing.T, auth, cryptoKey string) {
		c, err := ParseVAPID(auth, cryptoKey)
		if err != nil {
			if errors.Is(err, ErrNoVAPID) == errors.Is(err, ErrBadVAPID) {
				t.Fatalf("ParseVAPID(%q, %q) = %v: want exactly one of ErrNoVAPID, ErrBadVAPID", auth, cryptoKey, err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error message of %d bytes echoes the header: %.80q", len(err.Error()), err)
			}
			return
		}
		if c.Token == "" || len(c.Token) > maxToken || strings.IndexFunc(c.Token, notJWT) >= 0 {
			t.Fatalf("accepted a token that is not a compact JWT: %q", c.Token)
		}
		if _, err := ecdh.P256().NewPublicKey(c.Key); err != nil || len(c.Key) != 65 {
			t.Fatalf("accepted a key that is not an uncompressed P-256 point: %x", c.Key)
		}
		for _, form := range [][2]string{
			{"vapid t=" + c.Token + ", k=" + EncodeKey(c.Key), ""},
			{`vapid k="` + EncodeKey(c.Key) + `",t="` + c.Token + `"`, ""},
			{"WebPush " + c.Token, "p256ecdsa=" + EncodeKey(c.Key)},
		} {
			again, err := ParseVAPID(form[0], form[1])
			if err != nil || again.Token != c.Token || string(again.Key) != string(c.Key) {
				t.Fatalf("round trip through %q: %+v, %v; want %+v", form, again, err, c)
			}
		}
		if err := Verify(c, c.Key, origin, now); err != nil && !errors.Is(err, ErrBadVAPID) {
			t.Fatalf("Verify = %v, want nil or ErrBadVAPID", err)
		}
	})
}
