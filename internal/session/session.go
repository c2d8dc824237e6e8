// Package session is the core's view of live device connections on this
// node: a Session is a value the core can offer messages to and close, and the
// Hub finds the sessions a message is for. How a transport drives its socket
// stays inside its gateway (ARCHITECTURE.md, decision 1).
package session

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/push"
)

// Session is one live device connection (or a waiting long-poll).
type Session interface {
	// Offer tells the session that m was accepted for its device. It must
	// not block: a session that cannot take m now relies on reading the
	// store's inbox, which holds every message until it is acknowledged.
	Offer(m *push.Message)
	// Acked tells the session that its device acknowledged ids, through
	// whichever connection and node: a stream takes them out of its
	// window and refills it. It may read the store.
	Acked(ctx context.Context, ids []string) error
	// Recheck tells the session to read its device's inbox again, since
	// offers may have been lost on their way (the bus between nodes was
	// down). It may read the store.
	Recheck(ctx context.Context) error
	// Close ends the session, telling the device why where the transport
	// can (for example that another connection took over).
	Close(reason error)
}

// Reasons the core closes sessions with; transports map them to their own
// codes.
var (
	// ErrShuttingDown: the server stops (MQTT 5: 0x8B, WebSocket: 1001).
	ErrShuttingDown = errors.New("session: server shutting down")
	// ErrTakenOver: the device connected again, here or on another node,
	// and its new session is the one that counts (MQTT 5: 0x8E).
	ErrTakenOver = errors.New("session: another connection took over the device")
	// ErrDeviceDeleted: the device was deleted through the API.
	ErrDeviceDeleted = errors.New("session: the device was deleted")
)

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

// Add registers s as a live session of device d and reports whether it is
// the device's first on this node. The hub keeps d to match fan-out
// messages; Refresh replaces it when the device changes. An exclusive
// session is one that TakeOver closes when the device connects again.
func (h *Hub) Add(d *push.Device, s Session, exclusive bool) (first bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	first = len(h.byDevice[d.ID]) == 0
	h.byDevice[d.ID] = append(h.byDevice[d.ID], entry{s: s, d: d, exclusive: exclusive, since: time.Now().UnixNano()})
	put(h.byApp, d.App, s, d)
	return first
}

// Remove unregisters s and reports whether its device has no session left
// on this node. It is a no-op (and reports false) if s was not added.
func (h *Hub) Remove(d *push.Device, s Session) (last bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	before := len(h.byDevice[d.ID])
	list := slices.DeleteFunc(h.byDevice[d.ID], func(e entry) bool { return e.s == s })
	if len(list) == 0 {
		delete(h.byDevice, d.ID)
	} else {
		h.byDevice[d.ID] = list
	}
	drop(h.byApp, d.App, s)
	return before > 0 && len(list) == 0
}

// TakeOver closes, with ErrTakenOver, the exclusive sessions of device id
// that were added before the Unix time before (in nanoseconds), other
// than keep.
func (h *Hub) TakeOver(id string, keep Session, before int64) {
	var old []Session
	h.mu.RLock()
	for _, e := range h.byDevice[id] {
		if e.exclusive && e.s != keep && e.since < before {
			old = append(old, e.s)
		}
	}
	h.mu.RUnlock()
	for _, s := range old {
		s.Close(ErrTakenOver)
	}
}

// CloseDevice closes every session of device id with reason.
func (h *Hub) CloseDevice(id string, reason error) {
	for _, s := range h.Sessions(id) {
		s.Close(reason)
	}
}

// Acked tells every session of device id that ids were acknowledged and
// returns the first error one of them met.
func (h *Hub) Acked(ctx context.Context, id string, ids []string) error {
	var first error
	for _, s := range h.Sessions(id) {
		if err := s.Acked(ctx, ids); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// DeviceIDs returns the devices with a live session on this node.
func (h *Hub) DeviceIDs() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.byDevice))
	for id := range h.byDevice {
		out = append(out, id)
	}
	return out
}

// Online reports whether device id has a live session on this node.
func (h *Hub) Online(id string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.byDevice[id]) > 0
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
	s         Session
	d         *push.Device
	exclusive bool
	since     int64 // when it was added, Unix ns: TakeOver closes the older
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
