package session

import (
	"context"
	"maps"
	"testing"

	"github.com/heraldpush/herald/internal/push"
)

type fakeSession struct{ transport string }

func (*fakeSession) Offer(*push.Message)                   {}
func (*fakeSession) Acked(context.Context, []string) error { return nil }
func (*fakeSession) Recheck(context.Context) error         { return nil }
func (*fakeSession) Close(error)                           {}
func (f *fakeSession) Transport() string                   { return f.transport }

type plainSession struct{ fakeSession }

func (plainSession) Transport() {} // not a Described

func TestAppOnlineAndDeviceSessions(t *testing.T) {
	h := NewHub()
	d1 := &push.Device{ID: "d1", App: "a"}
	d2 := &push.Device{ID: "d2", App: "a"}
	d3 := &push.Device{ID: "d3", App: "b"}
	ws1, sse1, mqtt2, other := &fakeSession{"ws"}, &fakeSession{"sse"}, &fakeSession{"mqtt"}, &plainSession{}
	h.Add(d1, ws1, false)
	h.Add(d1, sse1, false)
	h.Add(d2, mqtt2, true)
	h.Add(d3, &fakeSession{"ws"}, false)
	h.Add(d3, other, false)

	by, devices := h.AppOnline("a")
	if want := map[string]int{"ws": 1, "sse": 1, "mqtt": 1}; !maps.Equal(by, want) || devices != 2 {
		t.Errorf("AppOnline(a) = %v, %d; want %v, 2", by, devices, want)
	}
	if by, devices := h.AppOnline("b"); !maps.Equal(by, map[string]int{"ws": 1, "other": 1}) || devices != 1 {
		t.Errorf("AppOnline(b) = %v, %d", by, devices)
	}
	if by, devices := h.AppOnline("none"); len(by) != 0 || devices != 0 {
		t.Errorf("AppOnline(none) = %v, %d", by, devices)
	}

	got := h.DeviceSessions("d1")
	if len(got) != 2 || got[0].Transport != "ws" || got[1].Transport != "sse" || got[1].Since.Before(got[0].Since) {
		t.Errorf("DeviceSessions(d1) = %+v, want ws then sse", got)
	}
	h.Remove(d1, ws1)
	if by, devices := h.AppOnline("a"); by["ws"] != 0 || by["sse"] != 1 || devices != 2 {
		t.Errorf("after the first session went, AppOnline(a) = %v, %d; d1 still counts once", by, devices)
	}
	h.Remove(d1, sse1)
	if got := h.DeviceSessions("d1"); len(got) != 0 {
		t.Errorf("DeviceSessions of a device without sessions = %+v", got)
	}
	if _, devices := h.AppOnline("a"); devices != 1 {
		t.Errorf("AppOnline(a) counts %d devices, want 1", devices)
	}
}
