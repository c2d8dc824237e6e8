package api

import (
	"math"
	"testing"
	"time"
)

// TestAppLimiterTake: a bucket per app, spent all or none, refilled at the
// rate; the wait it reports is exactly when the refused pushes would fit.
func TestAppLimiterTake(t *testing.T) {
	l := newAppLimiter(10, 20)
	t0 := time.Unix(1_000_000, 0)
	if _, ok := l.take("a", 20, t0); !ok {
		t.Fatal("a full burst was refused")
	}
	wait, ok := l.take("a", 5, t0)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("5 pushes on an empty bucket at 10/s: ok %v, wait %s; want refused, 500ms", ok, wait)
	}
	// Refused pushes spent nothing: after the wait they fit, and no more.
	if _, ok := l.take("a", 5, t0.Add(wait)); !ok {
		t.Error("5 pushes after the wait they were told were refused")
	}
	if _, ok := l.take("a", 1, t0.Add(wait)); ok {
		t.Error("a push beyond the refill was accepted")
	}
	if _, ok := l.take("b", 20, t0); !ok {
		t.Error("another app's burst was refused")
	}
	if wait, ok := l.take("c", 21, t0); ok || wait != math.MaxInt64 {
		t.Errorf("more than the burst at once: ok %v, wait %s; want never", ok, wait)
	}
}

// BenchmarkAppLimiterTake is the cost the limit adds to every push, from
// parallel callers of one app (the contended case).
func BenchmarkAppLimiterTake(b *testing.B) {
	l := newAppLimiter(1e9, 1e9)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.take("ak_bench", 1, time.Now())
		}
	})
}
