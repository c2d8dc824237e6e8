package delivery

import (
	"sync"
	"time"
)

// recentCache keeps what the relay read from the store for ttl, for the
// jobs that follow in runs: one message has a job per device it reaches,
// and one device a job per message. It holds at most max entries; past
// them a value is not kept (and read again next time). Expired entries are
// dropped at most once per ttl, so that a full cache costs a lookup, not a
// walk, per job. It has its own lock, apart from the queue's.
type recentCache[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu     sync.Mutex
	m      map[K]recentEntry[V] // guarded by mu
	pruned time.Time            // guarded by mu
}

type recentEntry[V any] struct {
	v  V
	at time.Time
}

func newRecentCache[K comparable, V any](ttl time.Duration, max int) *recentCache[K, V] {
	return &recentCache[K, V]{ttl: ttl, max: max, m: map[K]recentEntry[V]{}}
}

// get returns k's value if it was put less than ttl before now.
func (c *recentCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || now.Sub(e.at) >= c.ttl {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put keeps v for k from now on.
func (c *recentCache[K, V]) put(k K, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max && now.Sub(c.pruned) >= c.ttl {
		for key, e := range c.m {
			if now.Sub(e.at) >= c.ttl {
				delete(c.m, key)
			}
		}
		c.pruned = now
	}
	if _, ok := c.m[k]; ok || len(c.m) < c.max {
		c.m[k] = recentEntry[V]{v, now}
	}
}

// forget drops k.
func (c *recentCache[K, V]) forget(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}
