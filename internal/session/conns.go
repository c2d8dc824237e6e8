package session

import (
	"slices"
	"sync"
)

// Conns indexes a transport's open connections by device, oldest first, so
// that the transport can cap how many one device holds. The zero value is
// ready to use; it is safe for concurrent use.
type Conns[C comparable] struct {
	mu       sync.Mutex
	byDevice map[string][]C // guarded by mu
}

// Add records c as device's newest connection and returns the oldest ones
// past max, which the caller closes (outside any lock of its own).
func (x *Conns[C]) Add(device string, c C, max int) (evicted []C) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.byDevice == nil {
		x.byDevice = make(map[string][]C)
	}
	list := append(x.byDevice[device], c)
	if n := len(list) - max; n > 0 {
		evicted = slices.Clone(list[:n])
		list = slices.Delete(list, 0, n)
	}
	x.byDevice[device] = list
	return evicted
}

// Remove forgets c; it is a no-op if c was evicted or never added.
func (x *Conns[C]) Remove(device string, c C) {
	x.mu.Lock()
	defer x.mu.Unlock()
	list := slices.DeleteFunc(x.byDevice[device], func(o C) bool { return o == c })
	if len(list) == 0 {
		delete(x.byDevice, device)
	} else {
		x.byDevice[device] = list
	}
}
