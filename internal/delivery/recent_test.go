package delivery

import (
	"testing"
	"time"
)

func TestRecentCache(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := newRecentCache[string, int](time.Second, 2)
	c.put("a", 1, t0)
	if v, ok := c.get("a", t0.Add(999*time.Millisecond)); !ok || v != 1 {
		t.Errorf("get(a) within the ttl = %d, %v", v, ok)
	}
	if _, ok := c.get("a", t0.Add(time.Second)); ok {
		t.Error("get(a) at the ttl still hits")
	}
	c.put("b", 2, t0)
	c.put("c", 3, t0) // full: not kept
	if _, ok := c.get("c", t0); ok {
		t.Error("a full cache kept a third entry")
	}
	c.put("a", 4, t0.Add(time.Millisecond)) // a kept key is updated even when full
	if v, _ := c.get("a", t0.Add(time.Millisecond)); v != 4 {
		t.Errorf("a = %d after an update, want 4", v)
	}
	c.put("c", 3, t0.Add(2*time.Second)) // the expired make room
	if v, ok := c.get("c", t0.Add(2*time.Second)); !ok || v != 3 {
		t.Errorf("after expiry made room, get(c) = %d, %v", v, ok)
	}
	c.forget("c")
	if _, ok := c.get("c", t0.Add(2*time.Second)); ok {
		t.Error("forget left c")
	}
}
