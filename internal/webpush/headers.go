package webpush

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors of the request headers of RFC 8030 §5.
var (
	ErrNoTTL      = errors.New("webpush: the TTL header is required")
	ErrBadTTL     = errors.New("webpush: invalid TTL")
	ErrBadUrgency = errors.New("webpush: invalid Urgency")
	ErrBadTopic   = errors.New("webpush: invalid Topic")
	// ErrBadHeader means an encryption header (Encryption, Crypto-Key,
	// Content-Encoding) is too large to keep with the message.
	ErrBadHeader = errors.New("webpush: invalid header")
)

// Urgency is how soon a push message is wanted (RFC 8030 §5.3).
type Urgency string

// The urgencies, lowest first.
const (
	VeryLow Urgency = "very-low"
	Low     Urgency = "low"
	Normal  Urgency = "normal"
	High    Urgency = "high"
)

// MaxTopicLen is the longest Topic, in characters (RFC 8030 §5.4).
const MaxTopicLen = 32

// ParseTTL reads the TTL header (RFC 8030 §5.2): a number of seconds, which
// is lowered to max. The header is required: an absent one is ErrNoTTL.
func ParseTTL(h string, max time.Duration) (time.Duration, error) {
	if h == "" {
		return 0, ErrNoTTL
	}
	for i := 0; i < len(h); i++ {
		if h[i] < '0' || h[i] > '9' {
			return 0, fmt.Errorf("%w: %q is not a whole number of seconds", ErrBadTTL, clip(h))
		}
	}
	// delta-seconds may be any number of digits; anything past max is max,
	// without overflowing on the way.
	n, err := strconv.ParseInt(h, 10, 64)
	if err != nil || n >= int64(max/time.Second) {
		return max, nil
	}
	return time.Duration(n) * time.Second, nil
}

// ParseUrgency reads the Urgency header (RFC 8030 §5.3); an absent one is
// Normal.
func ParseUrgency(h string) (Urgency, error) {
	if h == "" {
		return Normal, nil
	}
	switch u := Urgency(strings.ToLower(h)); u {
	case VeryLow, Low, Normal, High:
		return u, nil
	}
	return "", fmt.Errorf("%w: %q is not very-low, low, normal or high", ErrBadUrgency, clip(h))
}

// ParseTopic checks the Topic header (RFC 8030 §5.4): at most 32
// characters of the base64url alphabet. An absent one is "".
func ParseTopic(h string, present bool) (string, error) {
	if !present {
		return "", nil
	}
	if h == "" || len(h) > MaxTopicLen {
		return "", fmt.Errorf("%w: a topic is 1 to %d characters", ErrBadTopic, MaxTopicLen)
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", fmt.Errorf("%w: a topic is made of base64url characters (A-Z a-z 0-9 - _)", ErrBadTopic)
		}
	}
	return h, nil
}
