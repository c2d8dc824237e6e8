// Package relay is the contract between delivery and the vendors' push
// services (APNs, FCM, Web Push): a Sender hands one message to one device
// token and says, through its error, what the vendor answered; Policy
// decides when a failed send is tried again. The senders live beside it
// (relay/webpush, ...), each built per app from that app's credentials;
// only the server knows them.
package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/heraldpush/herald/internal/push"
)

// What a vendor's answer means. A Sender's error wraps one of these, or is
// a *RetryError; any other error is a fault of the sender itself and is
// retried like a network error.
var (
	// ErrGone means the vendor says the token or subscription no longer
	// exists (APNs 410 Unregistered, FCM UNREGISTERED, Web Push 404/410):
	// the device's channel is deactivated and not tried again.
	ErrGone = errors.New("relay: the device's token is gone")
	// ErrRejected means the vendor refused this message for good (too
	// large, malformed): it is reported failed, not retried.
	ErrRejected = errors.New("relay: the vendor rejected the message")
	// ErrCredentials means the vendor refused the app's credentials (a
	// VAPID key, a provider token, a service account): every message of the
	// app would fail alike, so the app's channel is reported broken rather
	// than each message retried.
	ErrCredentials = errors.New("relay: the vendor rejected the app's credentials")
)

// RetryError is a send the vendor asks to repeat later: 429, 500, 503, or a
// network error. After is the vendor's Retry-After, zero when it gave none.
type RetryError struct {
	After time.Duration
	Err   error
}

func (e *RetryError) Error() string {
	if e.After > 0 {
		return fmt.Sprintf("relay: retry after %s: %v", e.After, e.Err)
	}
	return fmt.Sprintf("relay: retry: %v", e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }

// Target is where a message goes on a vendor's channel: one of a token
// (APNs, FCM) and a Web Push subscription.
type Target struct {
	Token   string
	WebPush *push.WebPushSubscription
	// Platform is the device's platform: FCM shapes a message for an iOS
	// device (its apns block) apart from an Android one.
	Platform push.Platform
	// Since is when the device registered this token. APNs answers 410
	// with the time it learnt the token was invalid; a token registered
	// after that time is valid again and must not be deactivated.
	Since time.Time
}

// Sender hands messages to one vendor for one app. Send returns nil once the
// vendor has accepted m for the target; it must not retry by itself (the
// caller's Policy does, durably) and must honour ctx.
type Sender interface {
	Send(ctx context.Context, to Target, m *push.Message) error
}

// Policy bounds the retries of one message: exponential back-off from Base
// to Max with full jitter, or the vendor's Retry-After when it is longer,
// at most Attempts sends in all, and never past the message's expiry.
type Policy struct {
	Base     time.Duration // the first retry's back-off; 1 s when zero
	Max      time.Duration // the longest back-off; 10 min when zero
	Attempts int           // sends in all, the first included; 8 when zero
}

// MaxAttempts is how many sends the policy allows in all.
func (p Policy) MaxAttempts() int {
	if p.Attempts <= 0 {
		return 8
	}
	return p.Attempts
}

// Next returns when to send again after attempt (1 for the first send)
// failed with err at now, or false when the message is done with: the
// error is final (gone, rejected, credentials), the attempts are spent, or
// the next try would come after expires.
func (p Policy) Next(attempt int, err error, now, expires time.Time) (time.Duration, bool) {
	if err == nil || errors.Is(err, ErrGone) || errors.Is(err, ErrRejected) || errors.Is(err, ErrCredentials) {
		return 0, false
	}
	base, maxWait := p.Base, p.Max
	if base <= 0 {
		base = time.Second
	}
	if maxWait <= 0 {
		maxWait = 10 * time.Minute
	}
	if attempt >= p.MaxAttempts() {
		return 0, false
	}
	backoff := base << min(attempt-1, 30)
	if backoff <= 0 || backoff > maxWait {
		backoff = maxWait
	}
	// Full jitter: senders that failed together do not come back together.
	wait := time.Duration(rand.Int64N(int64(backoff)) + 1)
	var re *RetryError
	if errors.As(err, &re) && re.After > wait {
		wait = re.After
	}
	if !now.Add(wait).Before(expires) {
		return 0, false
	}
	return wait, true
}
