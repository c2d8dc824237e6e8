package embedded

import (
	"context"
	"errors"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/store"
)

// Push subscriptions (store.Subscription) live in two tables of their own,
// beside those listed in keys.go:
//
//	'h' tokenHash                        subscription record
//	'H' lp(deviceID) subscriptionID      tokenHash    the device's subscriptions
//
// A push looks its subscription up by token hash, one point read. The
// records outlive their device (DeleteDevice does not visit them): a push
// then finds the device gone and is answered 410, as for a revoked one.
const (
	tSub    = 'h'
	tDevSub = 'H'
)

func kSub(tokenHash []byte) []byte  { return append(key(tSub), tokenHash...) }
func kDevSubs(dev string) []byte    { return lp(key(tDevSub), dev) }
func kDevSub(dev, id string) []byte { return append(kDevSubs(dev), id...) }

var errNoTokenHash = errors.New("embedded: subscription without a token hash")

// CreateSubscription stores a new push subscription.
func (s *Store) CreateSubscription(ctx context.Context, sub store.Subscription) error {
	// Checked before the writer: an error other than ErrNotFound and
	// ErrExists would abort the whole group.
	if len(sub.TokenHash) == 0 {
		return errNoTokenHash
	}
	return s.write(ctx, func(w *writeTx) error {
		if ok, err := w.has(kDevice(sub.Device)); err != nil || !ok {
			return orErr(err, store.ErrNotFound)
		}
		for _, k := range [][]byte{kSub(sub.TokenHash), kDevSub(sub.Device, sub.ID)} {
			if ok, err := w.has(k); err != nil || ok {
				return orErr(err, store.ErrExists)
			}
		}
		w.set(kSub(sub.TokenHash), encodeSubscription(&sub))
		w.set(kDevSub(sub.Device, sub.ID), sub.TokenHash)
		return nil
	})
}

// Subscription returns the subscription whose token hashes to tokenHash.
func (s *Store) Subscription(ctx context.Context, tokenHash []byte) (sub store.Subscription, err error) {
	if len(tokenHash) == 0 {
		return store.Subscription{}, store.ErrNotFound
	}
	err = s.read(ctx, func(r pebble.Reader) error {
		sub, err = readSub(r, tokenHash)
		return err
	})
	return sub, err
}

func readSub(r pebble.Reader, tokenHash []byte) (store.Subscription, error) {
	v, err := getValue(r, kSub(tokenHash))
	if err != nil {
		return store.Subscription{}, err
	}
	return decodeSubscription(v)
}

// Subscriptions returns the device's subscriptions in ID order.
func (s *Store) Subscriptions(ctx context.Context, device string) ([]store.Subscription, error) {
	var out []store.Subscription
	err := s.read(ctx, func(r pebble.Reader) error {
		return scan(r, kDevSubs(device), func(_, hash []byte) (bool, error) {
			sub, err := readSub(r, hash)
			if err != nil {
				return false, err
			}
			out = append(out, sub)
			return true, nil
		})
	})
	return out, err
}

// RevokeSubscription marks the device's subscription id revoked.
func (s *Store) RevokeSubscription(ctx context.Context, device, id string, at time.Time) error {
	return s.write(ctx, func(w *writeTx) error {
		hash, err := w.get(kDevSub(device, id))
		if err != nil {
			return err
		}
		sub, err := readSub(w.b, hash)
		if err != nil || sub.Revoked() {
			return err
		}
		sub.RevokedAt = at
		w.set(kSub(hash), encodeSubscription(&sub))
		return nil
	})
}

func encodeSubscription(s *store.Subscription) []byte {
	e := enc{recordV1}
	e.str(s.ID)
	e.bytes(s.TokenHash)
	e.str(s.Device)
	e.str(s.App)
	e.bytes(s.AppServerKey)
	e.str(s.Label)
	e.time(s.CreatedAt)
	e.time(s.RevokedAt)
	return e
}

func decodeSubscription(b []byte) (store.Subscription, error) {
	d := dec{b: b}
	d.version()
	s := store.Subscription{
		ID: d.str(), TokenHash: d.bytes(), Device: d.str(), App: d.str(),
		AppServerKey: d.bytes(), Label: d.str(), CreatedAt: d.time(), RevokedAt: d.time(),
	}
	return s, d.err
}
