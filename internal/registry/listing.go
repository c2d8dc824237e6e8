package registry

import (
	"context"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Apps returns every app, in key order.
func (r *Registry) Apps(ctx context.Context) ([]push.App, error) {
	return r.store.ListApps(ctx)
}

// ListDevices returns a page of app's devices in ID order (store.Lister).
func (r *Registry) ListDevices(ctx context.Context, app string, q store.DeviceQuery) ([]push.Device, error) {
	return r.store.ListDevices(ctx, app, q)
}

// CountDevices counts app's devices by platform; it walks them all.
func (r *Registry) CountDevices(ctx context.Context, app string) (map[push.Platform]int, error) {
	return r.store.CountDevices(ctx, app)
}
