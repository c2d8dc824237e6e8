package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// The relay queue is relay_jobs (migration 0005), written by Append with
// the messages. RelayRetry, RelayDone and RelayExpand each run as one
// pipelined implicit transaction that first takes the store's sweep lock in
// shared mode, as Ack does: Sweep, which purges a message with its jobs and
// counters while it holds the lock exclusively, then never runs between
// their finding a job and their writing its counters or new jobs, so no
// relay row outlives its message.

// waiting is the result of the relay_outcomes row that counts a message's
// jobs waiting for a retry (store.RelayCounts.Waiting).
const waiting = store.RelayWaiting

// addOutcome adds n outcomes (a relay_outcomes row) to c.
func addOutcome(c *store.Counters, ch push.ChannelKind, result, reason string, n int) {
	if c.Relay == nil {
		c.Relay = map[push.ChannelKind]*store.RelayCounts{}
	}
	rc := c.Relay[ch]
	if rc == nil {
		rc = &store.RelayCounts{}
		c.Relay[ch] = rc
	}
	rc.Add(result, reason, n)
}

// relayDueQuery reads the jobs due at $1 in due order, at most $2 + 1 of
// them, and the first job not due: the row after those RelayDue returns is
// the earliest it did not return, due or not. Both arms walk
// relay_jobs_due and stop at their limit.
const relayDueQuery = `
SELECT seq, device, app, msg_id, channel, due_at, attempt, wait, due FROM (
	(SELECT seq, device, app, msg_id, channel, due_at, attempt, wait, true AS due
	FROM relay_jobs WHERE due_at <= $1 ORDER BY due_at, seq, device LIMIT $2 + 1)
	UNION ALL
	(SELECT seq, device, app, msg_id, channel, due_at, attempt, wait, false
	FROM relay_jobs WHERE due_at > $1 ORDER BY due_at, seq, device LIMIT 1)
) j
ORDER BY due_at, seq, device`

// RelayDue implements store.Store.
func (s *Store) RelayDue(ctx context.Context, now time.Time, limit int) ([]store.RelayJob, time.Time, error) {
	if err := s.check(); err != nil {
		return nil, time.Time{}, err
	}
	limit = max(limit, 0)
	rows, err := s.pool.Query(ctx, relayDueQuery, now, limit)
	if err != nil {
		return nil, time.Time{}, s.wrap("relay due", err)
	}
	var (
		out     []store.RelayJob
		next    time.Time
		j       store.RelayJob
		seq     int64
		channel string
		attempt int32
		wait    int64
		due     bool
	)
	_, err = pgx.ForEachRow(rows, []any{&seq, &j.Device, &j.App, &j.MsgID, &channel, &j.Due, &attempt, &wait, &due}, func() error {
		if !due || len(out) >= limit {
			if next.IsZero() {
				next = j.Due.UTC()
			}
			return nil
		}
		j.Seq, j.Channel, j.Due, j.Attempt, j.Wait = uint64(seq), push.ChannelKind(channel), j.Due.UTC(), int(attempt), time.Duration(wait)
		out = append(out, j)
		return nil
	})
	if err != nil {
		return nil, time.Time{}, s.wrap("relay due", err)
	}
	return out, next, nil
}

// relayRetry moves job ($1, $2) to $3 with attempt $4 and channel $5, and
// counts it waiting at its first retry (from attempt 0), as the embedded
// store does. The job is locked first, so that of two retries at once the
// second sees the first's attempt; a job that is gone is left gone.
const relayRetry = `
WITH prev AS (
	SELECT attempt FROM relay_jobs WHERE seq = $1 AND device = $2 FOR UPDATE
), moved AS (
	UPDATE relay_jobs j SET due_at = $3, attempt = $4, channel = $5
	FROM prev WHERE j.seq = $1 AND j.device = $2
	RETURNING prev.attempt AS was
)
INSERT INTO relay_outcomes (seq, channel, result, reason, count)
SELECT $1, $5, '` + waiting + `', '', 1 FROM moved WHERE moved.was = 0 AND $4 > 0 AND $2 <> ''
ON CONFLICT (seq, channel, result, reason) DO UPDATE SET count = relay_outcomes.count + 1`

// RelayRetry implements store.Store.
func (s *Store) RelayRetry(ctx context.Context, job store.RelayJob, due time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.relayBatch(ctx, func(b *pgx.Batch) {
		b.Queue(relayRetry, int64(job.Seq), job.Device, due, int32(job.Attempt), string(job.Channel))
	})
	return s.wrap("relay retry", err)
}

// relayDone deletes job ($1, $2), takes it off the waiting count if it was
// retried, and counts its outcome ($3, $4, $5) unless it was a fan-out job,
// it has no result, or its message is gone. The count of a message's
// outcome is one upsert: devices finishing at once queue on that row only
// for the moment of their increment.
const relayDone = `
WITH gone AS (
	DELETE FROM relay_jobs WHERE seq = $1 AND device = $2
	RETURNING seq, device, channel, attempt
), unwaiting AS (
	UPDATE relay_outcomes o SET count = o.count - 1 FROM gone
	WHERE gone.attempt > 0 AND gone.device <> '' AND o.seq = gone.seq AND o.channel = gone.channel
		AND o.result = '` + waiting + `' AND o.reason = ''
)
INSERT INTO relay_outcomes (seq, channel, result, reason, count)
SELECT gone.seq, $3, $4, $5, 1 FROM gone
WHERE gone.device <> '' AND $4 <> '' AND EXISTS (SELECT 1 FROM messages m WHERE m.seq = gone.seq)
ON CONFLICT (seq, channel, result, reason) DO UPDATE SET count = relay_outcomes.count + 1`

// relayUnwaited deletes message $1's waiting count once it is down to zero,
// as the embedded store keeps no zero counters. A statement of its own, after
// relayDone: within one statement, a decrement that waited for another's
// would not be seen by a delete beside it.
const relayUnwaited = `DELETE FROM relay_outcomes WHERE seq = $1 AND result = '` + waiting + `' AND count <= 0`

// RelayDone implements store.Store.
func (s *Store) RelayDone(ctx context.Context, ends ...store.RelayEnd) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(ends) == 0 {
		return nil
	}
	err := s.relayBatch(ctx, func(b *pgx.Batch) {
		seqs := map[uint64]bool{}
		for _, e := range ends {
			b.Queue(relayDone, int64(e.Job.Seq), e.Job.Device, string(e.Outcome.Channel), e.Outcome.Result, e.Outcome.Reason)
			seqs[e.Job.Seq] = true
		}
		for seq := range seqs {
			b.Queue(relayUnwaited, int64(seq))
		}
	})
	return s.wrap("relay done", err)
}

// relayExpand adds jobs (devices $3, channels $4, due $5, attempts $6) of
// the message of fan-out job ($1, $2), leaving alone those that exist, and
// deletes the fan-out job when $7 (the last expansion) is set. Nothing
// happens when the fan-out job is gone: it was expanded already, or its
// message purged. Locking it makes two expansions of it take turns.
const relayExpand = `
WITH src AS (
	SELECT seq, device, app, msg_id FROM relay_jobs WHERE seq = $1 AND device = $2 FOR UPDATE
), added AS (
	INSERT INTO relay_jobs (seq, device, app, msg_id, channel, due_at, attempt)
	SELECT src.seq, j.device, src.app, src.msg_id, j.channel, j.due_at, j.attempt
	FROM src, unnest($3::text[], $4::text[], $5::timestamptz[], $6::int[]) AS j(device, channel, due_at, attempt)
	WHERE j.device <> src.device
	ON CONFLICT (seq, device) DO NOTHING
)
DELETE FROM relay_jobs r USING src WHERE $7 AND r.seq = src.seq AND r.device = src.device`

// RelayExpand implements store.Store.
func (s *Store) RelayExpand(ctx context.Context, from store.RelayJob, jobs []store.RelayJob, last bool) error {
	if err := s.check(); err != nil {
		return err
	}
	var (
		devs, chans = make([]string, len(jobs)), make([]string, len(jobs))
		dues        = make([]time.Time, len(jobs))
		attempts    = make([]int32, len(jobs))
	)
	for i, j := range jobs {
		devs[i], chans[i], dues[i], attempts[i] = j.Device, string(j.Channel), j.Due, int32(j.Attempt)
	}
	err := s.relayBatch(ctx, func(b *pgx.Batch) {
		b.Queue(relayExpand, int64(from.Seq), from.Device, devs, chans, dues, attempts, last)
	})
	return s.wrap("relay expand", err)
}

// relayBatch runs the statements queue adds after the shared sweep lock, in
// one implicit transaction, as many times as retry needs.
func (s *Store) relayBatch(ctx context.Context, queue func(*pgx.Batch)) error {
	return retry(func() error {
		b := &pgx.Batch{}
		b.Queue(`SELECT pg_advisory_xact_lock_shared($1, $2)`, sweepLockClass, s.sweepKey)
		queue(b)
		n := b.Len()
		br := s.pool.SendBatch(ctx, b)
		defer br.Close()
		for range n {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return br.Close()
	})
}

// Waits implements store.Store, with both look-ups in one query: the inbox
// entry decides for an explicit target; otherwise a fan-out message meant
// for d waits until d has acknowledged it.
func (s *Store) Waits(ctx context.Context, d *push.Device, m *push.Message) (bool, error) {
	if err := s.check(); err != nil {
		return false, err
	}
	var inbox, acked bool
	err := s.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM inbox WHERE device_id = $1 AND seq = $2),
			EXISTS (SELECT 1 FROM acks WHERE device_id = $1 AND seq = $2)`,
		d.ID, int64(m.Seq)).Scan(&inbox, &acked)
	if err != nil {
		return false, s.wrap("waits", err)
	}
	return inbox || (m.Fanout() && m.For(d) && !acked), nil
}

// DeactivateChannel implements store.Store. The device row is locked while
// its channel is compared, so that a concurrent UpdateDevice that rotates the
// token either comes first, and the old token's deactivation is not done, or
// waits and then overwrites the deactivated channel with its own.
func (s *Store) DeactivateChannel(ctx context.Context, id string, ch push.Channel, reason string, at time.Time) (bool, error) {
	if err := s.check(); err != nil {
		return false, err
	}
	var done bool
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		done = false
		var cur push.Channel
		if err := tx.QueryRow(ctx, `SELECT channel FROM devices WHERE id = $1 FOR UPDATE`, id).Scan(&cur); err != nil {
			return err // pgx.ErrNoRows: no such device
		}
		if !cur.SameAddress(&ch) || cur.Inactive != "" {
			return nil
		}
		cur.Inactive, cur.InactiveAt = reason, at.UTC()
		if _, err := tx.Exec(ctx, `UPDATE devices SET channel = $2 WHERE id = $1`, id, cur); err != nil {
			return err
		}
		done = true
		return nil
	})
	if err != nil {
		return false, s.wrap("deactivate channel", err)
	}
	return done, nil
}

// PutChannelConfig implements store.Store. Like CreateDevice, it inserts
// from a SELECT of the app: no row written means no such app.
func (s *Store) PutChannelConfig(ctx context.Context, app, kind string, sealed []byte) error {
	if err := s.check(); err != nil {
		return err
	}
	if sealed == nil {
		sealed = []byte{} // the column is NOT NULL: nothing sealed is empty
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO channel_configs (app, kind, sealed) SELECT key, $2, $3 FROM apps WHERE key = $1
		ON CONFLICT (app, kind) DO UPDATE SET sealed = excluded.sealed`, app, kind, sealed)
	if err != nil {
		return s.wrap("put channel config", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: put channel config: app %q: %w", app, store.ErrNotFound)
	}
	return nil
}

// ChannelConfig implements store.Store.
func (s *Store) ChannelConfig(ctx context.Context, app, kind string) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var sealed []byte
	err := s.pool.QueryRow(ctx, `SELECT sealed FROM channel_configs WHERE app = $1 AND kind = $2`, app, kind).Scan(&sealed)
	if err != nil {
		return nil, s.wrap("channel config", err)
	}
	return sealed, nil
}

// DeleteChannelConfig implements store.Store.
func (s *Store) DeleteChannelConfig(ctx context.Context, app, kind string) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM channel_configs WHERE app = $1 AND kind = $2`, app, kind)
	if err != nil {
		return s.wrap("delete channel config", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delete channel config %s/%s: %w", app, kind, store.ErrNotFound)
	}
	return nil
}
