package api

import (
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// addrLimiter is a token bucket per source address.
type addrLimiter struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*bucket // guarded by mu
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time // guarded by addrLimiter.mu
}

func newAddrLimiter(perSecond float64, burst int) *addrLimiter {
	return &addrLimiter{rate: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*bucket)}
}

// allow reports whether r's source address may make one more call now,
// and if not, how long until it may.
func (l *addrLimiter) allow(r *http.Request, now time.Time) (time.Duration, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	l.mu.Lock()
	b := l.buckets[host]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[host] = b
	}
	b.seen = now
	l.mu.Unlock()
	if b.lim.AllowN(now, 1) {
		return 0, true
	}
	return time.Duration(math.Ceil((1 - b.lim.TokensAt(now)) / float64(l.rate) * float64(time.Second))), false
}

// prune forgets addresses whose bucket has refilled, so the map holds only
// recent callers.
func (l *addrLimiter) prune(now time.Time) {
	full := time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second)) + time.Second
	l.mu.Lock()
	defer l.mu.Unlock()
	for host, b := range l.buckets {
		if now.Sub(b.seen) > full {
			delete(l.buckets, host)
		}
	}
}
