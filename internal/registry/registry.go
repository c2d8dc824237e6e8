// Package registry manages apps and devices: their credentials, aliases and
// tags, and the resolution of a push's explicit audience to devices.
package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/heraldpush/herald/internal/netlimit"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Errors of the registry.
var (
	// ErrUnauthorized means the credentials do not match. It never says
	// whether the app or device exists.
	ErrUnauthorized = errors.New("registry: wrong credentials")
	// ErrNotFound means no such device in the caller's app (whether it
	// exists in another app is never revealed).
	ErrNotFound = errors.New("registry: not found")
	// ErrAppExists means an app with that name already exists.
	ErrAppExists = errors.New("registry: app exists")
	// ErrInvalid wraps a field that cannot be accepted.
	ErrInvalid = errors.New("registry: invalid")
)

// Registry manages apps and devices over a store.
type Registry struct {
	store   store.Store      // never nil
	now     func() time.Time // never nil
	maxTags int
}

// New returns a registry over s. now is the clock; maxTags bounds tags per
// device.
func New(s store.Store, now func() time.Time, maxTags int) *Registry {
	return &Registry{store: s, now: now, maxTags: maxTags}
}

// CreateApp creates an app named name and returns it with its master
// secret, which is shown once and stored only hashed.
func (r *Registry) CreateApp(ctx context.Context, name string) (push.App, string, error) {
	if err := push.ValidName(name); err != nil {
		return push.App{}, "", fmt.Errorf("%w: app name: %v", ErrInvalid, err)
	}
	secret := push.NewSecret()
	app := push.App{Key: push.NewAppKey(), Name: name, SecretHash: push.HashSecret(secret), CreatedAt: r.now().UTC()}
	if err := r.store.CreateApp(ctx, app); err != nil {
		if errors.Is(err, store.ErrExists) {
			return push.App{}, "", fmt.Errorf("%w: %q", ErrAppExists, name)
		}
		return push.App{}, "", err
	}
	return app, secret, nil
}

// EnsureApp returns the app named name, creating it if it does not exist.
// The secret is returned only when the app was created now.
func (r *Registry) EnsureApp(ctx context.Context, name string) (app push.App, secret string, err error) {
	app, err = r.store.AppByName(ctx, name)
	if err == nil {
		return app, "", nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return push.App{}, "", err
	}
	return r.CreateApp(ctx, name)
}

// App returns the app with key, or ErrNotFound.
func (r *Registry) App(ctx context.Context, key string) (push.App, error) {
	app, err := r.store.App(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return push.App{}, ErrNotFound
	}
	return app, err
}

// AuthApp returns the app whose key and master secret these are.
func (r *Registry) AuthApp(ctx context.Context, key, secret string) (push.App, error) {
	app, err := r.store.App(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return push.App{}, ErrUnauthorized
	}
	if err != nil {
		return push.App{}, err
	}
	if !push.SecretMatches(secret, app.SecretHash) {
		return push.App{}, ErrUnauthorized
	}
	// The connection the request came on (if ctx says which) has
	// authenticated: it leaves the cap on unauthenticated connections.
	netlimit.Authenticated(ctx)
	return app, nil
}

// Registration is what a device registers with.
type Registration struct {
	AppKey   string
	Platform push.Platform
	Alias    string
	Tags     []string
	Channel  push.Channel
}

// Register creates a device and returns it with its device secret, which is
// shown once and stored only hashed.
func (r *Registry) Register(ctx context.Context, reg Registration) (push.Device, string, error) {
	if !reg.Platform.Valid() {
		return push.Device{}, "", fmt.Errorf("%w: platform must be android, ios, web or other, not %q", ErrInvalid, reg.Platform)
	}
	if reg.Alias != "" {
		if err := push.ValidName(reg.Alias); err != nil {
			return push.Device{}, "", fmt.Errorf("%w: alias: %v", ErrInvalid, err)
		}
	}
	tags, err := push.NormalizeTags(reg.Tags, r.maxTags)
	if err != nil {
		return push.Device{}, "", fmt.Errorf("%w: tags: %v", ErrInvalid, err)
	}
	if reg.Channel, err = checkChannel(reg.Channel); err != nil {
		return push.Device{}, "", err
	}
	now := r.now().UTC()
	reg.Channel.Since = sinceFor(reg.Channel, now)
	secret := push.NewSecret()
	d, err := r.store.CreateDevice(ctx, push.Device{
		ID: push.NewRegistrationID(), App: reg.AppKey, Platform: reg.Platform,
		Alias: reg.Alias, Tags: tags, SecretHash: push.HashSecret(secret),
		Channel: reg.Channel, CreatedAt: now, UpdatedAt: now,
	})
	if errors.Is(err, store.ErrNotFound) {
		return push.Device{}, "", ErrNotFound
	}
	if err != nil {
		return push.Device{}, "", err
	}
	return d, secret, nil
}

// AuthDevice returns the device whose registration ID and secret these are.
func (r *Registry) AuthDevice(ctx context.Context, id, secret string) (push.Device, error) {
	d, err := r.store.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return push.Device{}, ErrUnauthorized
	}
	if err != nil {
		return push.Device{}, err
	}
	if !push.SecretMatches(secret, d.SecretHash) {
		return push.Device{}, ErrUnauthorized
	}
	netlimit.Authenticated(ctx) // as in AuthApp
	return d, nil
}

// Device returns app's device with id, or ErrNotFound if it does not exist
// in that app.
func (r *Registry) Device(ctx context.Context, app, id string) (push.Device, error) {
	d, err := r.store.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && d.App != app) {
		return push.Device{}, ErrNotFound
	}
	return d, err
}

// Patch changes a device's alias, tags and channel; nil fields are left
// alone.
type Patch struct {
	Alias      *string
	Tags       *[]string
	AddTags    []string
	RemoveTags []string
	Channel    *push.Channel // replaces the device's channel
}

// sinceFor is the registration time of a channel registered at now: now
// for a vendor's, none for Herald's own.
func sinceFor(ch push.Channel, now time.Time) time.Time {
	if ch.Kind == push.ChannelHerald {
		return time.Time{}
	}
	return now
}

// checkChannel checks a channel from outside (push.NormalizeChannel) and
// returns it as it is stored. Its errors wrap ErrInvalid and the push
// package's own, which say which field failed.
func checkChannel(ch push.Channel) (push.Channel, error) {
	ch, err := push.NormalizeChannel(ch)
	if err != nil {
		return push.Channel{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return ch, nil
}

// Update applies p to app's device id and returns the device as stored.
func (r *Registry) Update(ctx context.Context, app, id string, p Patch) (push.Device, error) {
	d, err := r.Device(ctx, app, id)
	if err != nil {
		return push.Device{}, err
	}
	if p.Alias != nil {
		if *p.Alias != "" {
			if err := push.ValidName(*p.Alias); err != nil {
				return push.Device{}, fmt.Errorf("%w: alias: %v", ErrInvalid, err)
			}
		}
		d.Alias = *p.Alias
	}
	tags := d.Tags
	if p.Tags != nil {
		tags = *p.Tags
	}
	tags = append(slices.Clone(tags), p.AddTags...)
	tags = slices.DeleteFunc(tags, func(t string) bool { return slices.Contains(p.RemoveTags, t) })
	if d.Tags, err = push.NormalizeTags(tags, r.maxTags); err != nil {
		return push.Device{}, fmt.Errorf("%w: tags: %v", ErrInvalid, err)
	}
	now := r.now().UTC()
	if p.Channel != nil {
		// A token given again, even the one held, is the device saying it
		// is valid now: it is active again from now on (APNs compares a
		// token's registration time with when it learnt the token was gone).
		if d.Channel, err = checkChannel(*p.Channel); err != nil {
			return push.Device{}, err
		}
		d.Channel.Since = sinceFor(d.Channel, now)
	}
	d.UpdatedAt = now
	if err := r.store.UpdateDevice(ctx, d); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return push.Device{}, ErrNotFound
		}
		return push.Device{}, err
	}
	return d, nil
}

// Delete removes app's device id with its inbox, and revokes its push
// subscriptions: a push to one is answered 410 until the sweep purges it.
func (r *Registry) Delete(ctx context.Context, app, id string) error {
	if _, err := r.Device(ctx, app, id); err != nil {
		return err
	}
	subs, err := r.store.Subscriptions(ctx, id)
	if err != nil {
		return err
	}
	err = r.store.DeleteDevice(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	// After the deletion, so that a failed one keeps the device whole. A
	// failure here leaves a subscription that answers 410 (its device is
	// gone) and is never purged; the caller learns of it.
	now := r.now().UTC()
	for _, sub := range subs {
		if err := r.store.RevokeSubscription(ctx, id, sub.ID, now); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("registry: revoking the deleted device's subscription %s: %w", sub.ID, err)
		}
	}
	return nil
}

// Alias returns app's devices with alias.
func (r *Registry) Alias(ctx context.Context, app, alias string) ([]push.Device, error) {
	return r.store.DevicesByAlias(ctx, app, alias)
}

// Resolve turns the explicit part of a's audience into app's device IDs,
// deduplicated, keeping only devices that pass the platform filter. Unknown
// names (or devices of other apps, which look the same) are returned in
// unknown.
func (r *Registry) Resolve(ctx context.Context, app string, a *push.Audience, platforms []push.Platform) (targets, unknown []string, err error) {
	devs, unknown, err := r.ResolveDevices(ctx, app, a, platforms)
	for _, d := range devs {
		targets = append(targets, d.ID)
	}
	return targets, unknown, err
}

// ResolveDevices is Resolve returning the devices, whose channels the
// relay needs.
func (r *Registry) ResolveDevices(ctx context.Context, app string, a *push.Audience, platforms []push.Platform) (targets []push.Device, unknown []string, err error) {
	res, err := r.ResolveAll(ctx, app, []Explicit{{Audience: a, Platforms: platforms}})
	if err != nil {
		return nil, nil, err
	}
	return res[0].Devices, res[0].Unknown, nil
}

// Explicit is an explicit audience to resolve and the platform filter it
// goes with: a message's Audience and Platforms.
type Explicit struct {
	Audience  *push.Audience
	Platforms []push.Platform
}

// Resolved is what ResolveDevices returns for one audience.
type Resolved struct {
	Devices []push.Device
	Unknown []string
}

// ResolveAll resolves each of auds as ResolveDevices does, reading the
// registration IDs of them all in one store call: a batch of pushes costs
// one look-up rather than one per target.
func (r *Registry) ResolveAll(ctx context.Context, app string, auds []Explicit) ([]Resolved, error) {
	var ids []string
	for _, e := range auds {
		ids = append(ids, e.Audience.RegistrationIDs...)
	}
	var found map[string]push.Device
	if len(ids) > 0 {
		var err error
		if found, err = r.store.Devices(ctx, ids); err != nil {
			return nil, err
		}
	}
	out := make([]Resolved, len(auds))
	for i, e := range auds {
		a, res := e.Audience, &out[i]
		seen := make(map[string]bool, len(a.RegistrationIDs))
		pass := func(p push.Platform) bool { return len(e.Platforms) == 0 || slices.Contains(e.Platforms, p) }
		for _, id := range a.RegistrationIDs {
			if seen[id] {
				continue
			}
			seen[id] = true
			d, ok := found[id]
			if !ok || d.App != app {
				res.Unknown = append(res.Unknown, id)
				continue
			}
			if pass(d.Platform) {
				res.Devices = append(res.Devices, d)
			}
		}
		for _, alias := range a.Aliases {
			ds, err := r.store.DevicesByAlias(ctx, app, alias)
			if err != nil {
				return nil, err
			}
			if len(ds) == 0 {
				res.Unknown = append(res.Unknown, alias)
			}
			for _, d := range ds {
				if !seen[d.ID] && pass(d.Platform) {
					seen[d.ID] = true
					res.Devices = append(res.Devices, d)
				}
			}
		}
	}
	return out, nil
}
