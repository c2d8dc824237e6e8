package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// RegisterWith is Register for a transport that hands a device its
// credentials before the device is stored: Mozilla's push protocol gives
// Firefox its UAID (registration ID and secret) in the hello, and Herald
// stores the device only when Firefox first subscribes. id and secret must
// come from push.NewRegistrationID and push.NewSecret. Only the platform
// of reg is checked: such a device has no alias and no tags.
func (r *Registry) RegisterWith(ctx context.Context, reg Registration, id, secret string) (push.Device, error) {
	if !reg.Platform.Valid() {
		return push.Device{}, fmt.Errorf("%w: platform must be android, ios, web or other, not %q", ErrInvalid, reg.Platform)
	}
	if reg.Alias != "" || len(reg.Tags) > 0 {
		return push.Device{}, fmt.Errorf("%w: RegisterWith takes no alias or tags", ErrInvalid)
	}
	if id == "" || secret == "" {
		return push.Device{}, fmt.Errorf("%w: an empty registration ID or secret", ErrInvalid)
	}
	ch, err := checkChannel(reg.Channel)
	if err != nil {
		return push.Device{}, err
	}
	reg.Channel = ch
	now := r.now().UTC()
	d, err := r.store.CreateDevice(ctx, push.Device{
		ID: id, App: reg.AppKey, Platform: reg.Platform, SecretHash: push.HashSecret(secret),
		Channel: reg.Channel, CreatedAt: now, UpdatedAt: now,
	})
	if errors.Is(err, store.ErrNotFound) {
		return push.Device{}, ErrNotFound
	}
	return d, err
}
