package api

import (
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/metrics"
)

// TestSamplerWindows: pushes within the last minute and hour are counted
// from the samples taken then, and from the start while the node is
// younger than the window.
func TestSamplerWindows(t *testing.T) {
	m := metrics.New(metrics.Options{})
	s := newSampler(m)
	start := time.Now()
	at := func(d time.Duration) time.Time { return start.Add(d) }

	m.Pushed("direct", "a", 5)
	s.take(at(time.Second))
	if minute, hour, total := s.since("a"); minute != 5 || hour != 5 || total != 5 {
		t.Errorf("a young node: since = %d, %d, %d; want 5 each", minute, hour, total)
	}
	for i := 2; i <= 70; i++ {
		if i == 30 {
			m.Pushed("direct", "a", 2)
			m.Pushed("tag", "b", 1)
		}
		s.take(at(time.Duration(i) * time.Second))
	}
	// The 5 are over a minute old, the 2 are not; the hour has them all.
	if minute, hour, total := s.since("a"); minute != 2 || hour != 7 || total != 7 {
		t.Errorf("after 70 s: since(a) = %d, %d, %d; want 2, 7, 7", minute, hour, total)
	}
	if minute, hour, total := s.since(""); minute != 3 || hour != 8 || total != 8 {
		t.Errorf("after 70 s: since(node) = %d, %d, %d; want 3, 8, 8", minute, hour, total)
	}
	if len(s.secs) != window {
		t.Errorf("the ring of seconds holds %d samples, want %d", len(s.secs), window)
	}
	prev, cur, next := s.last()
	if !cur.at.Equal(at(70*time.Second)) || !prev.at.Equal(at(69*time.Second)) {
		t.Errorf("last = %v, %v", prev.at, cur.at)
	}
	s.take(at(71 * time.Second))
	select {
	case <-next:
	default:
		t.Error("a new sample did not close the channel last returned")
	}
}
