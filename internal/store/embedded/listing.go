package embedded

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

func kTagDevs(app, tag string) []byte       { return lp(lp(key(tTagDev), app), tag) }
func kTagDev(app, tag, id string) []byte    { return append(kTagDevs(app, tag), id...) }
func kAppMsgs(app string) []byte            { return lp(key(tAppMsg), app) }
func kAppMsg(app string, seq uint64) []byte { return u64(kAppMsgs(app), seq) }

// putTags writes d's rows of the tag index.
func (w *writeTx) putTags(d *push.Device) {
	for _, t := range d.Tags {
		w.set(kTagDev(d.App, t, d.ID), nil)
	}
}

// dropTags deletes the rows of old's tags that keep is without (all of
// them when keep is nil); putTags writes the others again.
func (w *writeTx) dropTags(old *push.Device, keep []string) {
	for _, t := range old.Tags {
		if !slices.Contains(keep, t) {
			w.del(kTagDev(old.App, t, old.ID))
		}
	}
}

// ListApps implements store.Lister.
func (s *Store) ListApps(ctx context.Context) ([]push.App, error) {
	var out []push.App
	err := s.read(ctx, func(r pebble.Reader) error {
		out = out[:0]
		return scan(r, key(tApp), func(_, v []byte) (bool, error) {
			app, err := decodeApp(v)
			if err != nil {
				return false, err
			}
			out = append(out, app)
			return ctx.Err() == nil, ctx.Err()
		})
	})
	return out, err
}

// ListDevices implements store.Lister: a scan of the app's device index,
// or of the tag's, from the key after q.After.
func (s *Store) ListDevices(ctx context.Context, app string, q store.DeviceQuery) ([]push.Device, error) {
	p := kAppDevs(app)
	if q.Tag != "" {
		p = kTagDevs(app, q.Tag)
	}
	lo := p
	if q.After != "" {
		// The smallest key above p+After: After followed by a zero byte.
		lo = append(append(slices.Clip(p), q.After...), 0)
	}
	var out []push.Device
	err := s.read(ctx, func(r pebble.Reader) error {
		out = out[:0]
		return scanRange(r, lo, prefixEnd(p), func(k, _ []byte) (bool, error) {
			d, err := readDevice(r, string(k[len(p):]))
			if errors.Is(err, store.ErrNotFound) {
				return true, nil
			}
			if err != nil {
				return false, err
			}
			out = append(out, d)
			return len(out) < q.Limit && ctx.Err() == nil, ctx.Err()
		})
	})
	return out, err
}

// CountDevices implements store.Lister from the device index alone, whose
// values name each device's platform.
func (s *Store) CountDevices(ctx context.Context, app string) (map[push.Platform]int, error) {
	out := map[push.Platform]int{}
	err := s.read(ctx, func(r pebble.Reader) error {
		clear(out)
		p := kAppDevs(app)
		return scan(r, p, func(k, v []byte) (bool, error) {
			platform := push.Platform(v)
			if len(v) == 0 { // written before the index held platforms, and not yet rebuilt
				d, err := readDevice(r, string(k[len(p):]))
				if errors.Is(err, store.ErrNotFound) {
					return true, nil
				}
				if err != nil {
					return false, err
				}
				platform = d.Platform
			}
			out[platform]++
			return ctx.Err() == nil, ctx.Err()
		})
	})
	return out, err
}

// ListMessages implements store.Lister: the app's message index walked
// backwards from before's Seq.
func (s *Store) ListMessages(ctx context.Context, app, before string, limit int) ([]store.Listed, error) {
	var out []store.Listed
	err := s.read(ctx, func(r pebble.Reader) error {
		out = out[:0]
		p := kAppMsgs(app)
		hi := prefixEnd(p)
		if before != "" {
			seq, err := lookup(r, app, before)
			if err != nil {
				return err
			}
			hi = kAppMsg(app, seq)
		}
		return scanBack(r, p, hi, func(k []byte) (bool, error) {
			l, err := listedAt(r, seqSuffix(k))
			if errors.Is(err, store.ErrNotFound) {
				return true, nil
			}
			if err != nil {
				return false, err
			}
			out = append(out, l)
			return len(out) < limit && ctx.Err() == nil, ctx.Err()
		})
	})
	return out, err
}

// listedAt reads the message with seq and its counters, as Message does.
func listedAt(r pebble.Reader, seq uint64) (store.Listed, error) {
	m, err := readMessage(r, seq)
	if err != nil {
		return store.Listed{}, err
	}
	v, err := getValue(r, kCounters(seq))
	if err != nil {
		return store.Listed{}, err
	}
	c, err := decodeCounters(v)
	if err != nil {
		return store.Listed{}, err
	}
	l := store.Listed{Msg: *m, Counters: store.Counters{Targeted: int(c.targeted), Delivered: int(c.delivered), Replaced: int(c.replaced)}}
	l.Counters.Relay, err = relayCounts(r, seq)
	return l, err
}

// scanBack calls fn for every key in [lo, hi), in reverse key order, until
// fn returns false.
func scanBack(r pebble.Reader, lo, hi []byte, fn func(k []byte) (bool, error)) (err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("embedded: %w", cerr)
		}
	}()
	for it.Last(); it.Valid(); it.Prev() {
		more, err := fn(it.Key())
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// indexListing builds, once, what listing.go reads for a store written
// before it: the tag index ('G'), the app's message index ('N') and the
// platform in each device index row ('D'). Every row it writes is one a
// change would write, so a crash half way is finished on the next start.
func (s *Store) indexListing() error {
	if ok, err := hasKey(s.db, key(tListDone)); err != nil || ok {
		return err
	}
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	flush := func(force bool) error {
		if !force && b.Count() < 10000 {
			return nil
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("embedded: building the listing indexes: %w", err)
		}
		b.Close()
		b = s.db.NewBatch()
		return nil
	}
	err := scan(s.db, key(tDevice), func(_, v []byte) (bool, error) {
		d, err := decodeDevice(v)
		if err != nil {
			return false, err
		}
		b.Set(kAppDev(d.App, d.ID), []byte(d.Platform), nil)
		for _, t := range d.Tags {
			b.Set(kTagDev(d.App, t, d.ID), nil, nil)
		}
		return true, flush(false)
	})
	if err != nil {
		return err
	}
	err = scan(s.db, key(tMsg), func(k, v []byte) (bool, error) {
		m, err := decodeMessage(v)
		if err != nil {
			return false, err
		}
		b.Set(kAppMsg(m.App, seqSuffix(k)), nil, nil)
		return true, flush(false)
	})
	if err != nil {
		return err
	}
	b.Set(key(tListDone), nil, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("embedded: building the listing indexes: %w", err)
	}
	return nil
}
