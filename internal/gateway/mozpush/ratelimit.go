package mozpush

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// addrLimiter bounds how fast one source address may have devices stored,
// as POST /v1/devices is bounded: a UAID costs nothing to ask for, so
// without it one client could fill the store with devices by connecting,
// registering and leaving in a loop. A token bucket per address.
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

// maxBuckets is how many addresses the limiter remembers before it forgets
// those whose bucket has refilled.
const maxBuckets = 10_000

func newAddrLimiter(perSecond float64, burst int) *addrLimiter {
	return &addrLimiter{rate: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*bucket)}
}

// allow reports whether the address remote (host:port) may store one more
// device now.
func (l *addrLimiter) allow(remote string, now time.Time) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	l.mu.Lock()
	b := l.buckets[host]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.pruneLocked(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[host] = b
	}
	b.seen = now
	l.mu.Unlock()
	return b.lim.AllowN(now, 1)
}

// pruneLocked forgets addresses whose bucket has refilled since they were
// last seen: forgetting them changes nothing. l.mu must be held.
func (l *addrLimiter) pruneLocked(now time.Time) {
	full := time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second)) + time.Second
	for host, b := range l.buckets {
		if now.Sub(b.seen) > full {
			delete(l.buckets, host)
		}
	}
}
