package session

import (
	"slices"
	"time"
)

// Described is a Session that names its transport (mqtt, ws, sse, poll,
// ...), for the sessions a device or an app has on this node. A session
// that is not one counts as "other".
type Described interface {
	Transport() string
}

// Info is one live session of a device.
type Info struct {
	Transport string
	Since     time.Time // when it was added to the hub
}

func transportOf(s Session) string {
	if d, ok := s.(Described); ok {
		return d.Transport()
	}
	return "other"
}

// DeviceSessions returns device id's live sessions on this node, oldest
// first.
func (h *Hub) DeviceSessions(id string) []Info {
	h.mu.RLock()
	out := make([]Info, 0, len(h.byDevice[id]))
	for _, e := range h.byDevice[id] {
		out = append(out, Info{Transport: transportOf(e.s), Since: time.Unix(0, e.since).UTC()})
	}
	h.mu.RUnlock()
	slices.SortFunc(out, func(a, b Info) int { return a.Since.Compare(b.Since) })
	return out
}

// AppOnline counts app's live sessions on this node by transport, and the
// devices holding them. It walks the app's sessions under the hub's read
// lock, which holds connecting devices back meanwhile: call it at a
// person's pace (the console's once a second), not a push's.
func (h *Hub) AppOnline(app string) (byTransport map[string]int, devices int) {
	byTransport = map[string]int{}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s, d := range h.byApp[app] {
		byTransport[transportOf(s)]++
		// A device counts once, at its first session.
		if list := h.byDevice[d.ID]; len(list) > 0 && list[0].s == s {
			devices++
		}
	}
	return byTransport, devices
}
