package push

import "errors"

// Validation errors. Each is wrapped with the detail that failed; callers map
// them to stable error codes with errors.Is.
var (
	ErrBadJSON         = errors.New("push: malformed JSON")
	ErrDuplicateKey    = errors.New("push: duplicate key")
	ErrBadAudience     = errors.New("push: invalid audience")
	ErrEmptyAudience   = errors.New("push: empty audience")
	ErrTooManyIDs      = errors.New("push: too many registration IDs")
	ErrEmptyMessage    = errors.New("push: neither notification nor message")
	ErrPayloadTooLarge = errors.New("push: payload too large")
	ErrBadTTL          = errors.New("push: invalid ttl")
	ErrBadOption       = errors.New("push: invalid option")
	ErrBadPlatform     = errors.New("push: invalid platform")
	ErrBadTag          = errors.New("push: invalid tag or alias")
	ErrBadToken        = errors.New("push: invalid channel token")
	ErrBadSubscription = errors.New("push: invalid web push subscription")
	// ErrReservedKey means a provider's message uses a key that only
	// Herald's own Web Push endpoints may write (WebPushKey).
	ErrReservedKey = errors.New("push: reserved key in message")
)
