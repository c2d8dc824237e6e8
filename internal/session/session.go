// Package session is the core's view of live device connections on this
// node: a Session is a value the core can offer messages to and close, and the
// Hub finds the sessions a message is for. How a transport drives its socket
// stays inside its gateway (ARCHITECTURE.md, decision 1).
package session

import (
	"errors"
	"runtime"
	"slices"
	"sync"

	"github.com/heraldpush/herald/internal/push"
)

// Session is one live device connection (or a waiting long-poll).
type Session interface {
	// Offer tells the session that m was accepted for its device. It must
	// not block: a session that cannot take m now relies on reading the
	// store's inbox, which holds every message until it is acknowledged.
	Offer(m *push.Message)
	// Close ends the session, telling the device why where the transport
	// can (for example that another connection took over).
	Close(reason error)
}

// ErrShuttingDown is the reason the server closes every session with when
// it stops; transports map it to their own code (MQTT 5: 0x8B, WebSocket:
// 1001).
var ErrShuttingDown = errors.New("session: server shutting down")

// Hub indexes the live sessions of this node by device and by app.
// The zero value is not usable; call NewHub.
type Hub struct {
	mu sync.RWMutex
	// byDevice and byApp index the same entries; guarded by mu. A device
	// almost always has one session, so its sessions are a slice, not a
	// map: a small map costs hundreds of bytes per idle connection.
	byDevice map[string][]entry
	byApp    map[string]map[Session]*push.Device
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{
		byDevice: make(map[string][]entry),
		byApp:    make(map[string]map[Session]*push.Device),
	}
}

// Add registers s as a live session of device d. The hub keeps d to match
// fan-out messages; Refresh replaces it when the device changes.
func (h *Hub) Add(d *push.Device, s Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byDevice[d.ID] = append(h.byDevice[d.ID], entry{s, d})
	put(h.byApp, d.App, s, d)
}

// Remove unregisters s. It is a no-op if s was not added.
func (h *Hub) Remove(d *push.Device, s Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := slices.DeleteFunc(h.byDevice[d.ID], func(e entry) bool { return e.s == s })
	if len(list) == 0 {
		delete(h.byDevice, d.ID)
	} else {
		h.byDevice[d.ID] = list
	}
	drop(h.byApp, d.App, s)
}

// Refresh replaces the device snapshot of every session of d.ID, so that
// fan-out matching sees new tags or a new platform at once.
func (h *Hub) Refresh(d *push.Device) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, e := range h.byDevice[d.ID] {
		h.byDevice[d.ID][i].d = d
		h.byApp[d.App][e.s] = d
	}
}

// Sessions returns the live sessions of the device with id.
func (h *Hub) Sessions(id string) []Session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]Session, 0, len(h.byDevice[id]))
	for _, e := range h.byDevice[id] {
		out = append(out, e.s)
	}
	return out
}

// Deliver offers m to the live sessions it is for: those of the explicit
// targets and, for a fan-out message, every session of the app whose device
// m.For matches. It returns how many sessions it offered m to, once every
// offer has been made.
//
// The sessions are collected under the read lock and offered after it is
// released, so that connecting devices do not wait for a broadcast; a large
// broadcast is split over GOMAXPROCS goroutines, since each offer may be a
// write to a socket. Offers to one session still happen in Deliver order,
// because Deliver returns only when all of its offers are made.
func (h *Hub) Deliver(m *push.Message, targets []string) int {
	h.mu.RLock()
	var to []Session
	for _, id := range targets {
		for _, e := range h.byDevice[id] {
			to = append(to, e.s)
		}
	}
	if m.Fanout() {
		if set := h.byApp[m.App]; len(set) > 0 {
			to = slices.Grow(to, len(set))
			for s, d := range set {
				if m.For(d) && !slices.Contains(targets, d.ID) {
					to = append(to, s)
				}
			}
		}
	}
	h.mu.RUnlock()

	workers := min(runtime.GOMAXPROCS(0), len(to)/parallelOffers)
	if workers <= 1 {
		for _, s := range to {
			s.Offer(m)
		}
		return len(to)
	}
	var wg sync.WaitGroup
	chunk := (len(to) + workers - 1) / workers
	for part := range slices.Chunk(to, chunk) {
		wg.Go(func() {
			for _, s := range part {
				s.Offer(m)
			}
		})
	}
	wg.Wait()
	return len(to)
}

// parallelOffers is how many sessions make it worth another goroutine.
const parallelOffers = 512

// Len returns the number of live sessions.
func (h *Hub) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, set := range h.byApp {
		n += len(set)
	}
	return n
}

// entry is one session of a device, with the device as the hub matches it.
type entry struct {
	s Session
	d *push.Device
}

func put(m map[string]map[Session]*push.Device, key string, s Session, d *push.Device) {
	set := m[key]
	if set == nil {
		set = make(map[Session]*push.Device)
		m[key] = set
	}
	set[s] = d
}

func drop(m map[string]map[Session]*push.Device, key string, s Session) {
	if set := m[key]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(m, key)
		}
	}
}

// All returns every live session, for shutdown.
func (h *Hub) All() []Session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []Session
	for _, set := range h.byApp {
		for s := range set {
			out = append(out, s)
		}
	}
	return out
}
