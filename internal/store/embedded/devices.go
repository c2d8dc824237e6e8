package embedded

import (
	"context"
	"errors"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// CreateApp stores a new app. store.ErrExists if its key or name is taken.
func (s *Store) CreateApp(ctx context.Context, app push.App) error {
	return s.write(ctx, func(w *writeTx) error {
		for _, k := range [][]byte{kApp(app.Key), kAppName(app.Name)} {
			if ok, err := w.has(k); err != nil || ok {
				return orErr(err, store.ErrExists)
			}
		}
		w.set(kApp(app.Key), encodeApp(&app))
		w.set(kAppName(app.Name), []byte(app.Key))
		return nil
	})
}

// orErr returns err if it is set, else alt: the result of a has() check that
// found the key.
func orErr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// App returns the app with key.
func (s *Store) App(ctx context.Context, key string) (app push.App, err error) {
	err = s.readOne(ctx, func(r pebble.Reader) error {
		app, err = readApp(r, key)
		return err
	})
	return app, err
}

// AppByName returns the app named name.
func (s *Store) AppByName(ctx context.Context, name string) (app push.App, err error) {
	err = s.read(ctx, func(r pebble.Reader) error {
		k, err := getValue(r, kAppName(name))
		if err != nil {
			return err
		}
		app, err = readApp(r, string(k))
		return err
	})
	return app, err
}

func readApp(r pebble.Reader, key string) (push.App, error) {
	v, err := getValue(r, kApp(key))
	if err != nil {
		return push.App{}, err
	}
	return decodeApp(v)
}

// CreateDevice stores a new device with FirstSeq set to the highest Seq
// assigned so far. Because the writer assigns Seqs, "so far" is exact: every
// message with a higher Seq commits after the device exists.
func (s *Store) CreateDevice(ctx context.Context, d push.Device) (push.Device, error) {
	err := s.write(ctx, func(w *writeTx) error {
		if ok, err := w.has(kApp(d.App)); err != nil || !ok {
			return orErr(err, store.ErrNotFound)
		}
		if ok, err := w.has(kDevice(d.ID)); err != nil || ok {
			return orErr(err, store.ErrExists)
		}
		d.FirstSeq = w.s.seq
		if err := w.takeAddress(&d, nil); err != nil {
			return err
		}
		w.putDevice(&d)
		return nil
	})
	if err != nil {
		return push.Device{}, err
	}
	return d, nil
}

// putDevice writes d and its index rows.
func (w *writeTx) putDevice(d *push.Device) {
	w.set(kDevice(d.ID), encodeDevice(d))
	w.set(kAppDev(d.App, d.ID), []byte(d.Platform))
	if d.Alias != "" {
		w.set(kAlias(d.App, d.Alias, d.ID), nil)
	}
	w.putTags(d)
}

// Device returns the device with id.
func (s *Store) Device(ctx context.Context, id string) (d push.Device, err error) {
	err = s.readOne(ctx, func(r pebble.Reader) error {
		d, err = readDevice(r, id)
		return err
	})
	return d, err
}

// Devices returns the devices with the given IDs that exist.
func (s *Store) Devices(ctx context.Context, ids []string) (map[string]push.Device, error) {
	out := make(map[string]push.Device, len(ids))
	err := s.readOne(ctx, func(r pebble.Reader) error {
		for _, id := range ids {
			if _, ok := out[id]; ok {
				continue
			}
			d, err := readDevice(r, id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out[id] = d
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func readDevice(r pebble.Reader, id string) (push.Device, error) {
	v, err := getValue(r, kDevice(id))
	if err != nil {
		return push.Device{}, err
	}
	return decodeDevice(v)
}

// UpdateDevice replaces the mutable fields of a stored device.
func (s *Store) UpdateDevice(ctx context.Context, d push.Device) error {
	return s.write(ctx, func(w *writeTx) error {
		old, err := readDevice(w.b, d.ID)
		if err != nil {
			return err
		}
		if old.Alias != "" && old.Alias != d.Alias {
			w.del(kAlias(old.App, old.Alias, old.ID))
		}
		w.dropTags(&old, d.Tags)
		nd := old
		nd.Platform, nd.Alias, nd.Tags = d.Platform, d.Alias, d.Tags
		nd.Channel, nd.SecretHash, nd.UpdatedAt = d.Channel, d.SecretHash, d.UpdatedAt
		if err := w.takeAddress(&nd, &old); err != nil {
			return err
		}
		w.putDevice(&nd)
		return nil
	})
}

// DeleteDevice removes a device, its index rows, its inbox entries and its
// fan-out acknowledgements.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	return s.write(ctx, func(w *writeTx) error {
		d, err := readDevice(w.b, id)
		if err != nil {
			return err
		}
		if err := w.dropAddress(&d); err != nil {
			return err
		}
		w.del(kDevice(id))
		w.del(kAppDev(d.App, id))
		if d.Alias != "" {
			w.del(kAlias(d.App, d.Alias, id))
		}
		w.dropTags(&d, nil)
		// Range deletions: the inbox and collapse rows are contiguous.
		for _, p := range [][]byte{kInboxPrefix(id), kCollapsePrefix(id)} {
			w.b.DeleteRange(p, prefixEnd(p), nil)
		}
		// Acks are keyed by message, so visit the app's fan-out messages
		// (only those that can still be delivered have acks; see retire).
		var seqs []uint64
		err = scanRange(w.b, kFanout(d.App, d.FirstSeq+1), prefixEnd(kFanoutPrefix(d.App)), func(k, _ []byte) (bool, error) {
			seqs = append(seqs, seqSuffix(k))
			return true, nil
		})
		for _, seq := range seqs {
			w.del(kAck(seq, id))
		}
		return err
	})
}

// DevicesByAlias returns the app's devices with alias, in ID order.
func (s *Store) DevicesByAlias(ctx context.Context, app, alias string) ([]push.Device, error) {
	var out []push.Device
	err := s.read(ctx, func(r pebble.Reader) error {
		p := kAliasPrefix(app, alias)
		return scan(r, p, func(k, _ []byte) (bool, error) {
			d, err := readDevice(r, string(k[len(p):]))
			if err != nil {
				return false, err
			}
			out = append(out, d)
			return true, nil
		})
	})
	return out, err
}

// EachDevice calls fn for every device of app until fn returns false. It
// reads one snapshot, so devices created during the walk may be missed.
// fn must not call Close.
func (s *Store) EachDevice(ctx context.Context, app string, fn func(*push.Device) bool) error {
	return s.read(ctx, func(r pebble.Reader) error {
		p := kAppDevs(app)
		return scan(r, p, func(k, _ []byte) (bool, error) {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			d, err := readDevice(r, string(k[len(p):]))
			if errors.Is(err, store.ErrNotFound) {
				return true, nil
			}
			if err != nil {
				return false, err
			}
			return fn(&d), nil
		})
	})
}
