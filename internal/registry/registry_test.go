package registry

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
	"github.com/heraldpush/herald/internal/store/embedded"
)

// countingStore counts the device reads that go to the store.
type countingStore struct {
	store.Store
	device, devices int
}

func (c *countingStore) Device(ctx context.Context, id string) (push.Device, error) {
	c.device++
	return c.Store.Device(ctx, id)
}

func (c *countingStore) Devices(ctx context.Context, ids []string) (map[string]push.Device, error) {
	c.devices++
	return c.Store.Devices(ctx, ids)
}

// TestResolveAll resolves several audiences with one device read: each
// gets what ResolveDevices alone would give it (its own unknowns, a device
// once, the platform filter, another app's device unknown, aliases).
func TestResolveAll(t *testing.T) {
	ctx := context.Background()
	st, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st}
	r := New(cs, time.Now, 10)
	app, _, err := r.CreateApp(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := r.CreateApp(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	reg := func(app push.App, p push.Platform, alias string) string {
		d, _, err := r.Register(ctx, Registration{AppKey: app.Key, Platform: p, Alias: alias})
		if err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	and, ios, alice, foreign := reg(app, push.Android, ""), reg(app, push.IOS, ""), reg(app, push.Web, "alice"), reg(other, push.Android, "")

	auds := []Explicit{
		{Audience: &push.Audience{RegistrationIDs: []string{and, "nope", and, ios}}},
		{Audience: &push.Audience{RegistrationIDs: []string{ios, foreign}, Aliases: []string{"alice", "bob"}}},
		{Audience: &push.Audience{RegistrationIDs: []string{and, ios}}, Platforms: []push.Platform{push.IOS}},
		{Audience: &push.Audience{RegistrationIDs: []string{alice}, Aliases: []string{"alice"}}},
	}
	got, err := r.ResolveAll(ctx, app.Key, auds)
	if err != nil {
		t.Fatal(err)
	}
	if cs.devices != 1 || cs.device != 0 {
		t.Errorf("%d Devices and %d Device calls for the batch, want 1 and 0", cs.devices, cs.device)
	}
	want := []struct{ devices, unknown []string }{
		{[]string{and, ios}, []string{"nope"}},
		{[]string{ios, alice}, []string{foreign, "bob"}},
		{[]string{ios}, nil},
		{[]string{alice}, nil},
	}
	for i, w := range want {
		var ids []string
		for _, d := range got[i].Devices {
			ids = append(ids, d.ID)
		}
		if !slices.Equal(ids, w.devices) || !slices.Equal(got[i].Unknown, w.unknown) {
			t.Errorf("audience %d: devices %v, unknown %v; want %v, %v", i, ids, got[i].Unknown, w.devices, w.unknown)
		}
	}
	if got, err := r.ResolveAll(ctx, app.Key, nil); err != nil || len(got) != 0 {
		t.Errorf("ResolveAll(none) = %v, %v", got, err)
	}
}
