package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// ListApps implements store.Lister.
func (s *Store) ListApps(ctx context.Context) ([]push.App, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, _ := s.pool.Query(ctx, `SELECT key, name, secret_hash, created_at FROM apps ORDER BY key`)
	apps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (push.App, error) {
		var a push.App
		err := r.Scan(&a.Key, &a.Name, &a.SecretHash, &a.CreatedAt)
		a.CreatedAt = a.CreatedAt.UTC()
		return a, err
	})
	return apps, s.wrap("list apps", err)
}

// ListDevices implements store.Lister. The planner takes devices_app for
// a common tag (walking the app's devices in ID order until the page is
// full) and devices_tags for a rare one.
func (s *Store) ListDevices(ctx context.Context, app string, q store.DeviceQuery) ([]push.Device, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var rows pgx.Rows
	if q.Tag == "" {
		rows, _ = s.pool.Query(ctx, `SELECT `+deviceCols+` FROM devices WHERE app = $1 AND id > $2 ORDER BY id LIMIT $3`,
			app, q.After, q.Limit)
	} else {
		rows, _ = s.pool.Query(ctx, `SELECT `+deviceCols+` FROM devices WHERE app = $1 AND tags @> ARRAY[$4::text] AND id > $2 ORDER BY id LIMIT $3`,
			app, q.After, q.Limit, q.Tag)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (push.Device, error) { return scanDevice(r) })
	return ds, s.wrap("list devices", err)
}

// CountDevices implements store.Lister.
func (s *Store) CountDevices(ctx context.Context, app string) (map[push.Platform]int, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	out := map[push.Platform]int{}
	var (
		platform string
		n        int
	)
	rows, _ := s.pool.Query(ctx, `SELECT platform, count(*) FROM devices WHERE app = $1 GROUP BY platform`, app)
	_, err := pgx.ForEachRow(rows, []any{&platform, &n}, func() error {
		out[push.Platform(platform)] = n
		return nil
	})
	if err != nil {
		return nil, s.wrap("count devices", err)
	}
	return out, nil
}

// ListMessages implements store.Lister through messages_app_seq, with the
// counters as Message reads them and the page's relay outcomes in one more
// query.
func (s *Store) ListMessages(ctx context.Context, app, before string, limit int) ([]store.Listed, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	below := int64(1<<63 - 1)
	if before != "" {
		err := s.pool.QueryRow(ctx, `SELECT seq FROM messages WHERE app = $1 AND id = $2`, app, before).Scan(&below)
		if err != nil {
			return nil, s.wrap("list messages", err)
		}
	}
	rows, _ := s.pool.Query(ctx, `
		SELECT `+messageCols+`, m.targeted, m.delivered + (SELECT count(*) FROM acks a WHERE a.seq = m.seq), m.n_replaced
		FROM messages m WHERE m.app = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3`, app, below, limit)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Listed, error) {
		var l store.Listed
		c := &l.Counters
		var err error
		l.Msg, err = scanMessage(r, &c.Targeted, &c.Delivered, &c.Replaced)
		return l, err
	})
	if err != nil || len(out) == 0 {
		return out, s.wrap("list messages", err)
	}
	seqs := make([]int64, len(out))
	at := make(map[int64]*store.Listed, len(out))
	for i := range out {
		seqs[i] = int64(out[i].Msg.Seq)
		at[seqs[i]] = &out[i]
	}
	var (
		seq                     int64
		channel, result, reason string
		n                       int
	)
	rows, _ = s.pool.Query(ctx, `SELECT seq, channel, result, reason, count FROM relay_outcomes WHERE seq = ANY($1)`, seqs)
	_, err = pgx.ForEachRow(rows, []any{&seq, &channel, &result, &reason, &n}, func() error {
		if l := at[seq]; l != nil {
			addOutcome(&l.Counters, push.ChannelKind(channel), result, reason, n)
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap("list messages", err)
	}
	return out, nil
}
