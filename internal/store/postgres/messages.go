package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Why Pending keeps no per-device cursor:
//
// Seq comes from a sequence, so a transaction that drew Seq 10 can commit
// after one that drew Seq 11. A device that has read up to 11 and moved a
// cursor there would never see 10. So the only per-device position is
// FirstSeq, fixed at registration, and Pending always scans every fan-out
// message of the app above FirstSeq that is not yet swept, minus the ones the
// device acknowledged (rows in acks). A message that commits late is simply
// found by the next Pending. The messages_fanout partial index keeps that scan
// to messages that can still be delivered: Sweep takes dead ones out of it.

// matchSQL is push.Message.For's platform and selector test for the message
// row f, against a device whose platform is the parameter plat and whose tags
// are the text[] parameter tags (never NULL). App and FirstSeq are compared
// by the callers. NULL arrays are the nil slices of push.Audience.
func matchSQL(plat, tags string) string {
	return `(coalesce(cardinality(f.platforms), 0) = 0 OR ` + plat + ` = ANY(f.platforms))
		AND (f.aud_all OR (
			(coalesce(cardinality(f.aud_tags), 0) = 0 OR f.aud_tags && ` + tags + `)
			AND (f.aud_tag_and IS NULL OR f.aud_tag_and <@ ` + tags + `)
			AND (f.aud_tag_not IS NULL OR NOT f.aud_tag_not && ` + tags + `)))`
}

const messageCols = `m.seq, m.app, m.id, m.aud_all, m.aud_ids, m.aud_aliases, m.aud_tags, m.aud_tag_and, m.aud_tag_not,
	m.platforms, m.has_notification, m.n_title, m.n_body, m.n_badge, m.n_sound, m.n_extras, m.data, m.ttl,
	m.priority, m.collapse_id, m.idempotency_key, m.accepted_at, m.send_at, m.expires_at, m.recalled, m.replaced`

// scanMessage scans messageCols, then extra.
func scanMessage(row pgx.Row, extra ...any) (push.Message, error) {
	var (
		m                      push.Message
		seq                    int64
		platforms              []string
		hasNote                bool
		title, body, sound     pgtype.Text
		badge                  pgtype.Int4
		extras, data           []byte
		ttl                    pgtype.Interval
		priority               string
		collapseID, idemKey    pgtype.Text
		accepted, send, expiry time.Time
	)
	dest := append([]any{&seq, &m.App, &m.ID, &m.Audience.All, &m.Audience.RegistrationIDs, &m.Audience.Aliases,
		&m.Audience.Tags, &m.Audience.TagAnd, &m.Audience.TagNot, &platforms, &hasNote, &title, &body, &badge, &sound,
		&extras, &data, &ttl, &priority, &collapseID, &idemKey, &accepted, &send, &expiry, &m.Recalled, &m.Replaced},
		extra...)
	if err := row.Scan(dest...); err != nil {
		return push.Message{}, err
	}
	m.Seq = uint64(seq)
	if platforms != nil {
		m.Platforms = make([]push.Platform, len(platforms))
		for i, p := range platforms {
			m.Platforms[i] = push.Platform(p)
		}
	}
	if hasNote {
		m.Notification = &push.Notification{Title: title.String, Body: body.String, Sound: sound.String}
		if badge.Valid {
			b := int(badge.Int32)
			m.Notification.Badge = &b
		}
		if extras != nil {
			m.Notification.Extras = json.RawMessage(extras)
		}
	}
	if data != nil {
		m.Data = json.RawMessage(data)
	}
	m.TTL = time.Duration(ttl.Microseconds)*time.Microsecond +
		time.Duration(ttl.Days)*24*time.Hour + time.Duration(ttl.Months)*30*24*time.Hour
	m.Priority = push.Priority(priority)
	m.CollapseID, m.IdempotencyKey = collapseID.String, idemKey.String
	m.AcceptedAt, m.SendAt, m.ExpiresAt = accepted.UTC(), send.UTC(), expiry.UTC()
	return m, nil
}

// insertMessage stores one message and its inbox entries, and returns its
// Seq, or no row when its idempotency key is taken. The targets are locked
// (FOR KEY SHARE) before the entries are written: a target deleted
// concurrently is skipped rather than failing the batch on the foreign key.
const insertMessage = `
WITH t AS (
	SELECT id FROM devices WHERE id = ANY($25) AND app = $1 FOR KEY SHARE
), m AS (
	INSERT INTO messages (app, id, fanout, aud_all, aud_ids, aud_aliases, aud_tags, aud_tag_and, aud_tag_not,
		platforms, has_notification, n_title, n_body, n_badge, n_sound, n_extras, data, ttl, priority,
		collapse_id, idempotency_key, accepted_at, send_at, expires_at, targeted)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,
		(SELECT count(*) FROM t))
	ON CONFLICT (app, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
	RETURNING seq
), i AS (
	INSERT INTO inbox (device_id, seq) SELECT t.id, m.seq FROM t, m
)
SELECT seq FROM m`

// findIdempotent finds the message that holds an idempotency key. It is a
// statement of its own, after the insert, because in READ COMMITTED only a
// new statement's snapshot is sure to see the conflicting row that made the
// insert do nothing (it may have committed while the insert waited on it).
const findIdempotent = `SELECT id, seq FROM messages WHERE app = $1 AND idempotency_key = $2`

// collapseInbox drops the targets' inbox entries of older live messages with
// the same collapse ID and counts them as replaced. The new message is found
// by ID, so nothing happens when it was a duplicate and not stored.
const collapseInbox = `
WITH k AS (
	SELECT seq FROM messages WHERE app = $1 AND id = $2
), gone AS (
	DELETE FROM inbox i USING messages o, k
	WHERE i.device_id = ANY($3) AND i.seq = o.seq AND o.seq < k.seq AND o.app = $1 AND o.collapse_id = $4
		AND NOT o.recalled AND NOT o.replaced AND o.expires_at > $5
	RETURNING i.seq
)
UPDATE messages SET n_replaced = n_replaced + g.n
FROM (SELECT seq, count(*) AS n FROM gone GROUP BY seq) g
WHERE messages.seq = g.seq`

// collapseFanout marks older live fan-out messages with the same collapse ID
// replaced.
const collapseFanout = `
UPDATE messages o SET replaced = true
FROM (SELECT seq FROM messages WHERE app = $1 AND id = $2) k
WHERE o.app = $1 AND o.collapse_id = $3 AND o.fanout AND o.seq < k.seq
	AND NOT o.recalled AND NOT o.replaced AND o.expires_at > $4`

// Append implements store.Store. The whole batch is one transaction and one
// round trip of pipelined statements, in batch order, so Seqs increase in
// batch order and a collapse sees the entries of earlier messages of the
// same batch. Commit is synchronous (Open insists on synchronous_commit), so
// the batch is durable when Append returns nil.
//
// A new message replaces older ones that are live at its AcceptedAt: not
// recalled, not replaced and not expired. Older messages that are still
// scheduled (not yet due) are replaced too.
func (s *Store) Append(ctx context.Context, batch []store.Accept) ([]store.Accepted, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if len(batch) == 0 {
		return nil, nil
	}
	b := &pgx.Batch{}
	for _, a := range batch {
		m := a.Msg
		if m == nil {
			return nil, errors.New("postgres: append: nil message")
		}
		targets := a.Targets
		if targets == nil {
			targets = []string{} // = ANY(NULL) would be NULL, not false; keep it plain
		}
		b.Queue(insertMessage, messageArgs(m, targets)...)
		if m.IdempotencyKey != "" {
			b.Queue(findIdempotent, m.App, m.IdempotencyKey)
		}
		if m.CollapseID != "" {
			if len(a.Targets) > 0 {
				b.Queue(collapseInbox, m.App, m.ID, targets, m.CollapseID, m.AcceptedAt)
			}
			if m.Fanout() {
				b.Queue(collapseFanout, m.App, m.ID, m.CollapseID, m.AcceptedAt)
			}
		}
	}

	out := make([]store.Accepted, len(batch))
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		for i, a := range batch {
			m := a.Msg
			var seq int64
			err := br.QueryRow().Scan(&seq)
			inserted := err == nil
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			out[i] = store.Accepted{ID: m.ID, Seq: uint64(seq)}
			if m.IdempotencyKey != "" {
				var id string
				err := br.QueryRow().Scan(&id, &seq)
				if errors.Is(err, pgx.ErrNoRows) {
					// The insert found the key taken, and now the holder is
					// gone: Sweep purged it in between. Retrying is safe.
					return fmt.Errorf("idempotency key %q of app %q vanished during the append; retry", m.IdempotencyKey, m.App)
				}
				if err != nil {
					return err
				}
				if !inserted {
					out[i] = store.Accepted{ID: id, Seq: uint64(seq), Duplicate: true}
				}
			} else if !inserted {
				return fmt.Errorf("message %q was not stored", m.ID) // unreachable: only the key can conflict quietly
			}
			if m.CollapseID != "" {
				if len(a.Targets) > 0 {
					if _, err := br.Exec(); err != nil {
						return err
					}
				}
				if m.Fanout() {
					if _, err := br.Exec(); err != nil {
						return err
					}
				}
			}
		}
		return br.Close()
	})
	if err != nil {
		return nil, s.wrap("append", err)
	}
	return out, nil
}

// messageArgs are insertMessage's arguments $1 to $25.
func messageArgs(m *push.Message, targets []string) []any {
	var platforms []string
	if m.Platforms != nil {
		platforms = make([]string, len(m.Platforms))
		for i, p := range m.Platforms {
			platforms[i] = string(p)
		}
	}
	var (
		hasNote            bool
		title, body, sound pgtype.Text
		badge              pgtype.Int4
		extras             []byte
	)
	if n := m.Notification; n != nil {
		hasNote = true
		title = pgtype.Text{String: n.Title, Valid: true}
		body = pgtype.Text{String: n.Body, Valid: true}
		sound = pgtype.Text{String: n.Sound, Valid: true}
		if n.Badge != nil {
			badge = pgtype.Int4{Int32: int32(*n.Badge), Valid: true}
		}
		extras = []byte(n.Extras)
	}
	a := &m.Audience
	return []any{
		m.App, m.ID, m.Fanout(), a.All, a.RegistrationIDs, a.Aliases, a.Tags, a.TagAnd, a.TagNot,
		platforms, hasNote, title, body, badge, sound, extras, []byte(m.Data),
		pgtype.Interval{Microseconds: m.TTL.Microseconds(), Valid: true}, string(m.Priority),
		nullText(m.CollapseID), nullText(m.IdempotencyKey), m.AcceptedAt, m.SendAt, m.ExpiresAt,
		targets,
	}
}

// nullText stores "" as NULL, so that partial indexes and unique constraints
// leave messages without a collapse ID or idempotency key alone.
func nullText(s string) pgtype.Text { return pgtype.Text{String: s, Valid: s != ""} }

// Message implements store.Store. Delivered is the count Sweep folded into
// the row plus the acknowledgements still kept as rows.
func (s *Store) Message(ctx context.Context, app, id string) (push.Message, store.Counters, error) {
	if err := s.check(); err != nil {
		return push.Message{}, store.Counters{}, err
	}
	var c store.Counters
	m, err := scanMessage(s.pool.QueryRow(ctx, `
		SELECT `+messageCols+`, m.targeted, m.delivered + (SELECT count(*) FROM acks a WHERE a.seq = m.seq), m.n_replaced
		FROM messages m WHERE m.app = $1 AND m.id = $2`, app, id),
		&c.Targeted, &c.Delivered, &c.Replaced)
	if err != nil {
		return push.Message{}, store.Counters{}, s.wrap("message", err)
	}
	return m, c, nil
}

// Recall implements store.Store.
func (s *Store) Recall(ctx context.Context, app, id string) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE messages SET recalled = true WHERE app = $1 AND id = $2`, app, id)
	if err != nil {
		return s.wrap("recall", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: recall %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// pendingQuery is the device's inbox entries united with the fan-out
// messages meant for it that it has not acknowledged (see the note at the
// top of this file), live at $6, in Seq order. UNION makes a message that
// reaches the device both ways appear once.
var pendingQuery = `
WITH cand AS (
	SELECT seq FROM inbox WHERE device_id = $1
	UNION
	SELECT f.seq FROM messages f
	WHERE f.app = $2 AND f.fanout AND NOT f.recalled AND NOT f.replaced AND NOT f.swept AND f.seq > $3
		AND f.send_at <= $6 AND f.expires_at > $6
		AND ` + matchSQL("$4", "$5") + `
		AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.device_id = $1 AND a.seq = f.seq)
)
SELECT ` + messageCols + ` FROM cand JOIN messages m ON m.seq = cand.seq
WHERE NOT m.recalled AND NOT m.replaced AND m.send_at <= $6 AND m.expires_at > $6
ORDER BY m.seq
LIMIT $7`

// Pending implements store.Store.
func (s *Store) Pending(ctx context.Context, d *push.Device, now time.Time, limit int) ([]push.Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, pendingQuery, d.ID, d.App, int64(d.FirstSeq), string(d.Platform), tagsArg(d.Tags), now, limit)
	if err != nil {
		return nil, s.wrap("pending", err)
	}
	msgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (push.Message, error) { return scanMessage(r) })
	if err != nil {
		return nil, s.wrap("pending", err)
	}
	return msgs, nil
}

// tagsArg never passes NULL: `x && NULL` is NULL, and NOT NULL is not true.
func tagsArg(tags []string) []string {
	if tags == nil {
		return []string{}
	}
	return tags
}

// ackQuery acknowledges, for device $1, the messages with IDs $6: those in
// its inbox, and the fan-out ones meant for it. A row in acks is what makes
// the delivery count once, whichever way the message reached the device.
// The device row is key-share locked so that an acknowledgement racing
// DeleteDevice either lands before the delete folds the device's rows into
// the counters, or is dropped with the device.
var ackQuery = `
WITH dev AS (
	SELECT 1 FROM devices WHERE id = $1 FOR KEY SHARE
), m AS (
	SELECT f.seq, f.fanout AND f.seq > $3 AND ` + matchSQL("$4", "$5") + ` AS meant
	FROM messages f WHERE f.app = $2 AND f.id = ANY($6) AND NOT f.swept
), gone AS (
	DELETE FROM inbox i USING m WHERE i.device_id = $1 AND i.seq = m.seq
	RETURNING i.seq
), acked AS (
	INSERT INTO acks (device_id, seq)
	SELECT $1, m.seq FROM m WHERE (m.meant OR m.seq IN (SELECT seq FROM gone)) AND EXISTS (SELECT 1 FROM dev)
	ON CONFLICT DO NOTHING
	RETURNING 1
)
SELECT count(*) FROM acked`

// Ack implements store.Store. It runs as one pipelined implicit transaction
// that first takes the store's sweep lock in shared mode: acknowledgements
// never wait for each other, while Sweep, which takes it exclusively, never
// folds and deletes a message's acks while one is being added, and once a
// message is swept its late acknowledgements are ignored (a duplicate could
// no longer be told apart).
func (s *Store) Ack(ctx context.Context, d *push.Device, ids []string) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock_shared($1, $2)`, sweepLockClass, s.sweepKey)
	b.Queue(ackQuery, d.ID, d.App, int64(d.FirstSeq), string(d.Platform), tagsArg(d.Tags), ids)
	var n int
	err := retry(func() error {
		br := s.pool.SendBatch(ctx, b)
		_, err := br.Exec()
		if err == nil {
			err = br.QueryRow().Scan(&n)
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return 0, s.wrap("ack", err)
	}
	return n, nil
}

// sweepChunk bounds the messages one Sweep transaction handles, so that the
// exclusive sweep lock, which holds acknowledgements back, is held briefly.
const sweepChunk = 2000

// sweepDead takes up to $2 messages that died by $1 (expired, recalled or
// replaced) and are not yet swept: it deletes their inbox entries, folds
// their acknowledgements into the delivered counter and deletes them, and
// marks the messages swept. The two arms of the UNION each use their own
// partial index.
const sweepDead = `
WITH dead AS (
	SELECT seq FROM (
		(SELECT seq FROM messages WHERE NOT swept AND expires_at <= $1 LIMIT $2)
		UNION
		(SELECT seq FROM messages WHERE NOT swept AND (recalled OR replaced) LIMIT $2)
	) u LIMIT $2
), entries AS (
	DELETE FROM inbox i USING dead WHERE i.seq = dead.seq
), acked AS (
	DELETE FROM acks a USING dead WHERE a.seq = dead.seq
	RETURNING a.seq
), n AS (
	SELECT seq, count(*) AS n FROM acked GROUP BY seq
)
UPDATE messages m SET swept = true, delivered = m.delivered + coalesce(n.n, 0)
FROM dead LEFT JOIN n ON n.seq = dead.seq
WHERE m.seq = dead.seq`

// purge deletes up to $2 messages that expired before $1, with whatever
// inbox entries and acks they still have (none, unless retain < 0).
const purge = `
WITH gone AS (
	DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE expires_at < $1 LIMIT $2)
	RETURNING seq
), entries AS (
	DELETE FROM inbox i USING gone WHERE i.seq = gone.seq
), acked AS (
	DELETE FROM acks a USING gone WHERE a.seq = gone.seq
)
SELECT count(*) FROM gone`

// Sweep implements store.Store, in transactions of at most sweepChunk
// messages, each holding the sweep lock exclusively (see Ack). Several nodes
// may sweep at once: the lock takes them in turn and the second finds
// nothing left.
func (s *Store) Sweep(ctx context.Context, now time.Time, retain time.Duration) (int, error) {
	purged := 0
	for {
		if err := s.check(); err != nil {
			return purged, err
		}
		var swept, gone int
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue(`SELECT pg_advisory_xact_lock($1, $2)`, sweepLockClass, s.sweepKey)
			b.Queue(sweepDead, now, sweepChunk)
			b.Queue(purge, now.Add(-retain), sweepChunk)
			br := tx.SendBatch(ctx, b)
			defer br.Close()
			if _, err := br.Exec(); err != nil {
				return err
			}
			tag, err := br.Exec()
			if err != nil {
				return err
			}
			swept = int(tag.RowsAffected())
			if err := br.QueryRow().Scan(&gone); err != nil {
				return err
			}
			return br.Close()
		})
		if err != nil {
			return purged, s.wrap("sweep", err)
		}
		purged += gone
		if swept < sweepChunk && gone < sweepChunk {
			return purged, nil
		}
	}
}
