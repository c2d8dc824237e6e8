package api

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldpush/herald/internal/apierr"
)

// appLimiter is a token bucket of pushes per app: /v1/push spends one,
// /v1/push/batch one per push in the batch, /wpush one. The bucket is per
// node, so a cluster of N nodes lets an app push N times the rate.
type appLimiter struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter // by app key; guarded by mu
}

func newAppLimiter(perSecond float64, burst int) *appLimiter {
	return &appLimiter{rate: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*rate.Limiter)}
}

// take spends n pushes of app's budget at now, all or none. When they do
// not fit it returns how long until they would, had nobody else pushed
// meanwhile; math.MaxInt64 nanoseconds when n is more than the burst.
//
// The map is never pruned: apps are created only by the admin, so it holds
// at most one small bucket per app there is.
func (l *appLimiter) take(app string, n int, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	b := l.buckets[app]
	if b == nil {
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[app] = b
	}
	l.mu.Unlock()
	if b.AllowN(now, n) {
		return 0, true
	}
	if n > l.burst {
		return math.MaxInt64, false
	}
	missing := float64(n) - b.TokensAt(now)
	return time.Duration(math.Ceil(missing / float64(l.rate) * float64(time.Second))), false
}

// AdmitPushes charges n pushes to app's push rate, or returns the 429 that
// says when to retry: for pushes that reach the node through the push
// service (/wpush), which is built before the API and shared with /mozpush.
func (a *API) AdmitPushes(app string, n int) error { return a.spend(app, n) }

// spend charges n pushes to app, or returns the 429 that says when to retry.
func (a *API) spend(app string, n int) error {
	wait, ok := a.pushLimit.take(app, n, time.Now())
	if ok {
		return nil
	}
	if wait == math.MaxInt64 {
		// Validate keeps the burst at least max-batch, so only a
		// misconfigured node gets here; no wait would help.
		return apierr.RateLimited.With("%d pushes at once are more than this app may ever make at once (%d)", n, a.pushLimit.burst)
	}
	return apierr.RateLimited.RetryIn(wait).With("this app is over its push rate (%g a second, %d at once); retry in %s",
		float64(a.pushLimit.rate), a.pushLimit.burst, wait.Round(time.Millisecond))
}
