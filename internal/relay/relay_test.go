package relay_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/relay"
)

func TestPolicyNext(t *testing.T) {
	p := relay.Policy{Base: time.Second, Max: time.Minute, Attempts: 5}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	far := now.Add(24 * time.Hour)
	network := &relay.RetryError{Err: errors.New("connection refused")}

	// Final answers are never retried.
	for _, err := range []error{nil, relay.ErrGone, fmt.Errorf("x: %w", relay.ErrRejected), relay.ErrCredentials} {
		if _, ok := p.Next(1, err, now, far); ok {
			t.Errorf("Next after %v: retried", err)
		}
	}
	// Back-off grows with full jitter and stays under Max.
	for attempt := 1; attempt < 5; attempt++ {
		ceiling := min(time.Second<<(attempt-1), time.Minute)
		for range 200 {
			wait, ok := p.Next(attempt, network, now, far)
			if !ok || wait <= 0 || wait > ceiling {
				t.Fatalf("attempt %d: wait %s (%v), want (0, %s]", attempt, wait, ok, ceiling)
			}
		}
	}
	// The attempts are bounded.
	if _, ok := p.Next(5, network, now, far); ok {
		t.Error("a sixth send after five attempts")
	}
	// Retry-After wins when longer than the back-off.
	if wait, ok := p.Next(1, &relay.RetryError{After: 30 * time.Second}, now, far); !ok || wait != 30*time.Second {
		t.Errorf("Retry-After 30s: wait %s (%v)", wait, ok)
	}
	// Never past the message's expiry.
	if _, ok := p.Next(1, &relay.RetryError{After: time.Hour}, now, now.Add(time.Minute)); ok {
		t.Error("a retry after the message expired")
	}
	// Any other error of a sender is retried like a network error.
	if _, ok := p.Next(1, errors.New("sender fault"), now, far); !ok {
		t.Error("an unclassified error was not retried")
	}
	// The zero Policy has working defaults.
	if wait, ok := (relay.Policy{}).Next(1, network, now, far); !ok || wait > time.Second {
		t.Errorf("zero Policy: %s %v", wait, ok)
	}
}
