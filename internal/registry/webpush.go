package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Sizes of a push subscription's identifiers, in random bytes.
const (
	// SubscriptionTokenBytes is the token of an endpoint URL: 192 bits,
	// unguessable, and drawn independently of the registration ID, so the
	// URL an application server holds says nothing of the device.
	SubscriptionTokenBytes = 24
	// SubscriptionIDBytes is the public handle a device lists and revokes
	// its subscriptions by; it is unique per device.
	SubscriptionIDBytes = 9
)

// Subscribe creates a push subscription for device d and returns it with
// its token. The token goes into the endpoint URL; like a secret it is shown
// once and stored only hashed. appServerKey, when set, is the P-256 key
// whose VAPID signature every push must carry.
func (r *Registry) Subscribe(ctx context.Context, d *push.Device, appServerKey []byte, label string) (store.Subscription, string, error) {
	token := push.NewID("", SubscriptionTokenBytes)
	sub := store.Subscription{
		ID: push.NewID("sub_", SubscriptionIDBytes), TokenHash: push.HashSecret(token),
		Device: d.ID, App: d.App, AppServerKey: appServerKey, Label: label, CreatedAt: r.now().UTC(),
	}
	err := r.store.CreateSubscription(ctx, sub)
	if errors.Is(err, store.ErrNotFound) {
		return store.Subscription{}, "", ErrNotFound
	}
	if err != nil {
		return store.Subscription{}, "", fmt.Errorf("registry: subscribe: %w", err)
	}
	return sub, token, nil
}

// Subscription returns the subscription whose token this is, revoked or
// not. ErrNotFound if there is none.
func (r *Registry) Subscription(ctx context.Context, token string) (store.Subscription, error) {
	sub, err := r.store.Subscription(ctx, push.HashSecret(token))
	if errors.Is(err, store.ErrNotFound) {
		return store.Subscription{}, ErrNotFound
	}
	return sub, err
}

// Subscriptions returns the device's live subscriptions.
func (r *Registry) Subscriptions(ctx context.Context, device string) ([]store.Subscription, error) {
	return r.store.Subscriptions(ctx, device)
}

// RevokeSubscription revokes the device's subscription id for good.
// ErrNotFound if the device has no such subscription.
func (r *Registry) RevokeSubscription(ctx context.Context, device, id string) error {
	err := r.store.RevokeSubscription(ctx, device, id, r.now().UTC())
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	return err
}
