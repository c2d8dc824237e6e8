package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// CreateApp implements store.Store.
func (s *Store) CreateApp(ctx context.Context, app push.App) error {
	if err := s.check(); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO apps (key, name, secret_hash, created_at) VALUES ($1, $2, $3, $4)`,
		app.Key, app.Name, app.SecretHash, app.CreatedAt)
	return s.wrap("create app", err)
}

// App implements store.Store. Apps found are kept (appCache): every
// provider call authenticates with one.
func (s *Store) App(ctx context.Context, key string) (push.App, error) {
	if a, ok := s.apps.get(key); ok {
		if err := s.check(); err != nil {
			return push.App{}, err
		}
		return a, nil
	}
	a, err := s.app(ctx, `SELECT key, name, secret_hash, created_at FROM apps WHERE key = $1`, key)
	if err == nil {
		s.apps.put(a)
	}
	return a, err
}

// appCache keeps apps read by key. No node ever changes or deletes an app
// (no method of the store does: an app row is written once), so a kept app
// is never stale; a method that changes apps must drop it. An app not found
// is not kept: another node may create it. At most maxApps are kept, the
// first ones read: past that, the others are read each time.
type appCache struct {
	mu   sync.RWMutex
	apps map[string]push.App // guarded by mu
}

const maxApps = 10000

func (c *appCache) get(key string) (push.App, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	a, ok := c.apps[key]
	if ok {
		a.SecretHash = slices.Clone(a.SecretHash) // the caller's to keep
	}
	return a, ok
}

func (c *appCache) put(a push.App) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apps == nil {
		c.apps = map[string]push.App{}
	}
	if len(c.apps) < maxApps {
		a.SecretHash = slices.Clone(a.SecretHash)
		c.apps[a.Key] = a
	}
}

// AppByName implements store.Store.
func (s *Store) AppByName(ctx context.Context, name string) (push.App, error) {
	return s.app(ctx, `SELECT key, name, secret_hash, created_at FROM apps WHERE name = $1`, name)
}

func (s *Store) app(ctx context.Context, query, arg string) (push.App, error) {
	if err := s.check(); err != nil {
		return push.App{}, err
	}
	var a push.App
	err := s.pool.QueryRow(ctx, query, arg).Scan(&a.Key, &a.Name, &a.SecretHash, &a.CreatedAt)
	if err != nil {
		return push.App{}, s.wrap("app", err)
	}
	a.CreatedAt = a.CreatedAt.UTC()
	return a, nil
}

const deviceCols = `id, app, platform, alias, tags, secret_hash, channel, created_at, updated_at, first_seq`

// deviceColsOf is deviceCols of the table named t in the query.
func deviceColsOf(t string) string {
	return t + "." + strings.ReplaceAll(deviceCols, ", ", ", "+t+".")
}

// scanDevice scans first, then deviceCols.
func scanDevice(row pgx.Row, first ...any) (push.Device, error) {
	var d push.Device
	var platform string
	var firstSeq int64
	err := row.Scan(append(first, &d.ID, &d.App, &platform, &d.Alias, &d.Tags, &d.SecretHash, &d.Channel, &d.CreatedAt, &d.UpdatedAt, &firstSeq)...)
	d.Platform = push.Platform(platform)
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	// The channel's times are JSON strings that keep the offset they were
	// written with; as the other times, they read back in UTC.
	d.Channel.Since, d.Channel.InactiveAt = d.Channel.Since.UTC(), d.Channel.InactiveAt.UTC()
	d.FirstSeq = uint64(firstSeq)
	return d, err
}

// vendorAddress is push.Channel.Address of the channel column col: the Web
// Push endpoint when there is a subscription, else the token. It and the
// predicate in holdsAddress are those of the devices_vendor_address index
// (migration 0005), so that a takeover finds the holder through it.
func vendorAddress(col string) string {
	return `coalesce(` + col + `->'webpush'->>'endpoint', ` + col + `->>'token')`
}

// holdsAddress matches the row whose channel column col holds the vendor
// address addr of kind kind (parameters): the index's predicate, spelt out
// so that the planner can use the partial index with parameters, then the
// address itself.
func holdsAddress(col, kind, addr string) string {
	return col + `->>'kind' <> 'herald' AND ` + vendorAddress(col) + ` <> ''
		AND ` + col + `->>'kind' = ` + kind + ` AND ` + vendorAddress(col) + ` = ` + addr
}

// takeAddressNew takes vendor address $3 of kind $4 in app $1 from the
// device other than $2 that holds it, whose channel becomes $5 (Herald's
// own).
var takeAddressNew = `UPDATE devices SET channel = $5 WHERE app = $1 AND id <> $2 AND ` + holdsAddress("channel", "$4", "$3")

// takeAddressOf does the same for the stored device $1, in the app it is
// stored in. It locks the device first: when the device is gone nothing is
// taken, and it cannot go before UpdateDevice writes it.
var takeAddressOf = `
WITH me AS (SELECT id, app FROM devices WHERE id = $1 FOR UPDATE)
UPDATE devices o SET channel = $4 FROM me
WHERE o.app = me.app AND o.id <> me.id AND ` + holdsAddress("o.channel", "$3", "$2")

// hasAddress reports whether ch holds a vendor address, which no other
// device of its app may hold (Herald's own channel has none).
func hasAddress(ch *push.Channel) bool {
	return ch.Kind != push.ChannelHerald && ch.Address() != ""
}

// queueAddressLock queues the transaction lock on d's vendor address: the
// registrations of one address take turns, each taking it from the one
// before. Without it, of many at once all but the first to commit would
// fail on the unique index, again at each retry. The key is a hash of the
// schema and the address: two addresses with one hash merely take turns too.
func (s *Store) queueAddressLock(b *pgx.Batch, d *push.Device) {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d\x00%s\x00%s\x00%s", s.sweepKey, d.App, d.Channel.Kind, d.Channel.Address())
	b.Queue(`SELECT pg_advisory_xact_lock($1, $2)`, addressLockClass, int32(h.Sum32()))
}

// herald is the channel a device falls back to when another takes its
// vendor address.
var herald = push.Channel{Kind: push.ChannelHerald}

// CreateDevice implements store.Store. FirstSeq is the highest Seq among
// committed messages. A message with a lower Seq that commits afterwards was
// appended concurrently with the registration, so leaving it out is as right
// as including it; what matters is that the device never misses a message
// appended after CreateDevice returned, and those all get a higher Seq.
//
// A vendor address another device of the app holds is taken from it in the
// same implicit transaction (one round trip), under the address's lock
// (queueAddressLock): when the insert fails (the ID is taken), the takeover
// is undone with it; when no row is inserted (no such app), the app has no
// devices to take from.
func (s *Store) CreateDevice(ctx context.Context, d push.Device) (push.Device, error) {
	if err := s.check(); err != nil {
		return push.Device{}, err
	}
	var firstSeq int64
	err := retry(func() error {
		b := &pgx.Batch{}
		// The takeover goes first: the unique index is checked at each
		// row, not at commit.
		took := hasAddress(&d.Channel)
		if took {
			s.queueAddressLock(b, &d)
			b.Queue(takeAddressNew, d.App, d.ID, d.Channel.Address(), string(d.Channel.Kind), herald)
		}
		// INSERT ... SELECT FROM apps: no row inserted means no such app.
		b.Queue(`
			INSERT INTO devices (id, app, platform, alias, tags, secret_hash, channel, created_at, updated_at, first_seq)
			SELECT $1, key, $3, $4, $5, $6, $7, $8, $9, (SELECT coalesce(max(seq), 0) FROM messages)
			FROM apps WHERE key = $2
			RETURNING first_seq`,
			d.ID, d.App, string(d.Platform), d.Alias, d.Tags, d.SecretHash, d.Channel, d.CreatedAt, d.UpdatedAt)
		br := s.pool.SendBatch(ctx, b)
		defer br.Close()
		for range b.Len() - 1 { // the lock and the takeover, if queued
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		if err := br.QueryRow().Scan(&firstSeq); err != nil {
			return err
		}
		return br.Close()
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return push.Device{}, fmt.Errorf("postgres: create device: app %q: %w", d.App, store.ErrNotFound)
	}
	if err != nil {
		return push.Device{}, s.wrap("create device", err)
	}
	d.FirstSeq = uint64(firstSeq)
	return d, nil
}

// Device implements store.Store.
func (s *Store) Device(ctx context.Context, id string) (push.Device, error) {
	if err := s.check(); err != nil {
		return push.Device{}, err
	}
	return s.reads.do(ctx, id)
}

// Devices implements store.Store in one query. A single ID is read as
// Device reads it, grouped with the concurrent look-ups (group.go).
func (s *Store) Devices(ctx context.Context, ids []string) (map[string]push.Device, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	out := make(map[string]push.Device, len(ids))
	switch len(ids) {
	case 0:
		return out, nil
	case 1:
		d, err := s.reads.do(ctx, ids[0])
		if errors.Is(err, store.ErrNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out[d.ID] = d
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, s.wrap("devices", err)
	}
	defer rows.Close()
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, s.wrap("devices", err)
		}
		out[d.ID] = d
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("devices", err)
	}
	return out, nil
}

// readDevices looks up the devices of group in one query (group.go). A
// device asked for twice comes back twice, so that no two callers share
// its slices.
func (s *Store) readDevices(ctx context.Context, group []*call[string, push.Device]) {
	if len(group) == 1 {
		cl := group[0]
		d, err := scanDevice(s.pool.QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, cl.req))
		if err != nil {
			cl.err = s.wrap("device", err)
			return
		}
		cl.res = d
		return
	}
	ids := make([]string, len(group))
	for i, cl := range group {
		ids[i] = cl.req
	}
	found := make([]bool, len(group))
	rows, err := s.pool.Query(ctx, `SELECT u.ord, `+deviceColsOf("d")+`
		FROM unnest($1::text[]) WITH ORDINALITY AS u(id, ord) JOIN devices d ON d.id = u.id`, ids)
	if err == nil {
		for rows.Next() {
			var ord int64
			d, serr := scanDevice(rows, &ord)
			if serr != nil {
				err = serr
				break
			}
			found[ord-1] = true
			group[ord-1].res = d
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	for i, cl := range group {
		switch {
		case err != nil:
			cl.res, cl.err = push.Device{}, s.wrap("device", err)
		case !found[i]:
			cl.err = s.wrap("device", pgx.ErrNoRows)
		}
	}
}

// UpdateDevice implements store.Store. It takes the device's vendor
// address from another device of its app as CreateDevice does, in one
// implicit transaction; the takeover locks the device first, so that a
// device that is gone takes nothing.
func (s *Store) UpdateDevice(ctx context.Context, d push.Device) error {
	if err := s.check(); err != nil {
		return err
	}
	var updated int64
	err := retry(func() error {
		b := &pgx.Batch{}
		took := hasAddress(&d.Channel)
		if took {
			s.queueAddressLock(b, &d)
			b.Queue(takeAddressOf, d.ID, d.Channel.Address(), string(d.Channel.Kind), herald)
		}
		b.Queue(`
			UPDATE devices SET platform = $2, alias = $3, tags = $4, channel = $5, secret_hash = $6, updated_at = $7
			WHERE id = $1`,
			d.ID, string(d.Platform), d.Alias, d.Tags, d.Channel, d.SecretHash, d.UpdatedAt)
		br := s.pool.SendBatch(ctx, b)
		defer br.Close()
		for range b.Len() - 1 {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		tag, err := br.Exec()
		if err != nil {
			return err
		}
		updated = tag.RowsAffected()
		return br.Close()
	})
	if err != nil {
		return s.wrap("update device", err)
	}
	if updated == 0 {
		return fmt.Errorf("postgres: update device %q: %w", d.ID, store.ErrNotFound)
	}
	return nil
}

// DeleteDevice implements store.Store. Its acknowledgements are first folded
// into the delivered counters of their messages, so that reports keep
// counting them. The device row is locked for update first: an Append or an
// Ack of the device (both key-share lock it) either committed before, and
// its rows are deleted here, or waits and then finds no device.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		// The shared sweep lock first, as Ack takes it: locks are taken in
		// one order, and Sweep never folds the same acks at the same time.
		b.Queue(`SELECT pg_advisory_xact_lock_shared($1, $2)`, sweepLockClass, s.sweepKey)
		b.Queue(`SELECT 1 FROM devices WHERE id = $1 FOR UPDATE`, id)
		b.Queue(`
			WITH acked AS (DELETE FROM acks WHERE device_id = $1 RETURNING seq)
			UPDATE messages m SET delivered = m.delivered + 1 FROM acked WHERE m.seq = acked.seq`, id)
		b.Queue(`DELETE FROM inbox WHERE device_id = $1`, id)
		b.Queue(`DELETE FROM devices WHERE id = $1`, id)
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		var one int
		if err := br.QueryRow().Scan(&one); err != nil {
			return err // pgx.ErrNoRows: no such device
		}
		for range 3 {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return br.Close()
	})
	return s.wrap("delete device", err)
}

// DevicesByAlias implements store.Store. The empty alias is no alias, so it
// names no devices.
func (s *Store) DevicesByAlias(ctx context.Context, app, alias string) ([]push.Device, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if alias == "" {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+deviceCols+` FROM devices WHERE app = $1 AND alias = $2 ORDER BY id`, app, alias)
	if err != nil {
		return nil, s.wrap("devices by alias", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (push.Device, error) { return scanDevice(r) })
	return ds, s.wrap("devices by alias", err)
}

// eachDeviceChunk is how many devices EachDevice reads per query.
const eachDeviceChunk = 1000

// EachDevice implements store.Store. It reads the app's devices in chunks in
// ID order (keyset pagination) and calls fn between queries, never while a
// result set is open: fn may call back into the store without needing a
// second pooled connection, and a long walk holds no snapshot that would
// keep vacuum from cleaning up. A device created or deleted during the walk
// may or may not be seen.
func (s *Store) EachDevice(ctx context.Context, app string, fn func(*push.Device) bool) error {
	after := ""
	for {
		if err := s.check(); err != nil {
			return err
		}
		rows, err := s.pool.Query(ctx, `SELECT `+deviceCols+` FROM devices WHERE app = $1 AND id > $2 ORDER BY id LIMIT $3`,
			app, after, eachDeviceChunk)
		if err != nil {
			return s.wrap("each device", err)
		}
		ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (push.Device, error) { return scanDevice(r) })
		if err != nil {
			return s.wrap("each device", err)
		}
		for i := range ds {
			if !fn(&ds[i]) {
				return nil
			}
		}
		if len(ds) < eachDeviceChunk {
			return nil
		}
		after = ds[len(ds)-1].ID
	}
}
