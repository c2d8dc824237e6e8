package embedded

import (
	"context"
	"errors"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/store"
)

// Push subscriptions (store.Subscription) live in tables of their own,
// beside those listed in keys.go:
//
//	'h' tokenHash                        subscription record
//	'H' lp(deviceID) subscriptionID      tokenHash    the device's live subscriptions
//	'u' lp(deviceID) subscriptionID      tokenHash    the device's revoked subscriptions
//	'U' revokedAt tokenHash              -            revocations in time order, for the purge
//
// A push looks its subscription up by token hash, one point read. Live and
// revoked subscriptions are indexed apart, so that listing (and counting,
// at every subscribe) reads only the live ones however many a device has
// revoked. The records outlive their device (DeleteDevice does not visit
// them; the registry revokes them first): a push then finds the device
// gone and is answered 410, as for a revoked one.
//
// Stores written before the split kept revoked subscriptions under 'H':
// Subscriptions skips them, and revoking one again moves it to 'u' and 'U'.
const (
	tSub        = 'h'
	tDevSub     = 'H'
	tDevRevoked = 'u'
	tRevokedAt  = 'U'
)

func kSub(tokenHash []byte) []byte      { return append(key(tSub), tokenHash...) }
func kDevSubs(dev string) []byte        { return lp(key(tDevSub), dev) }
func kDevSub(dev, id string) []byte     { return append(kDevSubs(dev), id...) }
func kDevRevoked(dev, id string) []byte { return append(lp(key(tDevRevoked), dev), id...) }
func kRevokedAt(at time.Time, tokenHash []byte) []byte {
	return append(u64(key(tRevokedAt), timeOrder(at)), tokenHash...)
}

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
		for _, k := range [][]byte{kSub(sub.TokenHash), kDevSub(sub.Device, sub.ID), kDevRevoked(sub.Device, sub.ID)} {
			if ok, err := w.has(k); err != nil || ok {
				return orErr(err, store.ErrExists)
			}
		}
		w.set(kSub(sub.TokenHash), encodeSubscription(&sub))
		if sub.Revoked() {
			w.set(kDevRevoked(sub.Device, sub.ID), sub.TokenHash)
			w.set(kRevokedAt(sub.RevokedAt, sub.TokenHash), nil)
		} else {
			w.set(kDevSub(sub.Device, sub.ID), sub.TokenHash)
		}
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

// Subscriptions returns the device's live subscriptions in ID order.
func (s *Store) Subscriptions(ctx context.Context, device string) ([]store.Subscription, error) {
	var out []store.Subscription
	err := s.read(ctx, func(r pebble.Reader) error {
		return scan(r, kDevSubs(device), func(_, hash []byte) (bool, error) {
			sub, err := readSub(r, hash)
			if err != nil {
				return false, err
			}
			if !sub.Revoked() { // revoked before the index split
				out = append(out, sub)
			}
			return true, nil
		})
	})
	return out, err
}

// RevokeSubscription marks the device's subscription id revoked and moves
// it from the live index to the revoked ones.
func (s *Store) RevokeSubscription(ctx context.Context, device, id string, at time.Time) error {
	return s.write(ctx, func(w *writeTx) error {
		hash, err := w.get(kDevSub(device, id))
		if errors.Is(err, store.ErrNotFound) {
			// Revoked already, or never the device's.
			_, err = w.get(kDevRevoked(device, id))
			return err
		}
		if err != nil {
			return err
		}
		sub, err := readSub(w.b, hash)
		if err != nil {
			return err
		}
		if !sub.Revoked() {
			sub.RevokedAt = at
			w.set(kSub(hash), encodeSubscription(&sub))
		}
		w.del(kDevSub(device, id))
		w.set(kDevRevoked(device, id), hash)
		w.set(kRevokedAt(sub.RevokedAt, hash), nil)
		return nil
	})
}

// PurgeSubscriptions deletes subscriptions revoked before before, walking
// the revocation index in time order, sweepChunk per writer group.
func (s *Store) PurgeSubscriptions(ctx context.Context, before time.Time) (int, error) {
	purged := 0
	for more := true; more; {
		n := 0
		if err := s.write(ctx, func(w *writeTx) (err error) {
			n, more, err = w.purgeSubscriptions(before)
			return err
		}); err != nil {
			return purged, err
		}
		purged += n
	}
	return purged, nil
}

func (w *writeTx) purgeSubscriptions(before time.Time) (int, bool, error) {
	lo, hi := key(tRevokedAt), u64(key(tRevokedAt), timeOrder(before))
	var keys [][]byte
	err := scanRange(w.b, lo, hi, func(k, _ []byte) (bool, error) {
		keys = append(keys, append([]byte(nil), k...))
		return len(keys) < sweepChunk, nil
	})
	if err != nil {
		return 0, false, err
	}
	for _, k := range keys {
		hash := k[1+8:]
		sub, err := readSub(w.b, hash)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, false, err
		}
		if err == nil {
			w.del(kSub(hash))
			w.del(kDevRevoked(sub.Device, sub.ID))
		}
		w.del(k)
	}
	return len(keys), len(keys) == sweepChunk, nil
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
