package relay

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// What the senders share of the vendors' protocols: FCM carries an APNs
// block and a Web Push block of its own, so the same collapse ID must come
// out the same whichever way a message goes.

// MaxAPNsCollapseID is the longest apns-collapse-id APNs takes, in bytes.
const MaxAPNsCollapseID = 64

// APNsCollapseID is the apns-collapse-id for a Herald collapse ID: as it
// is up to MaxAPNsCollapseID bytes, else the hex of its SHA-256 (64
// bytes), so that a longer one still collapses with itself and not with
// another.
func APNsCollapseID(collapseID string) string {
	if len(collapseID) <= MaxAPNsCollapseID {
		return collapseID
	}
	sum := sha256.Sum256([]byte(collapseID))
	return hex.EncodeToString(sum[:])
}

// WebPushTopic is the Web Push Topic for a collapse ID: the first 24
// bytes of its SHA-256 in base64url, 32 characters of the alphabet RFC
// 8030 §5.4 allows, whatever the collapse ID holds.
func WebPushTopic(collapseID string) string {
	sum := sha256.Sum256([]byte(collapseID))
	return base64.RawURLEncoding.EncodeToString(sum[:24])
}

// RetryAfter reads a Retry-After header of seconds or an HTTP date, at
// most a day; zero when absent or malformed.
func RetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
		return time.Duration(min(n, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
