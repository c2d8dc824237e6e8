package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// insertBatch stores a batch of messages and their inbox entries in one
// statement and returns the (ord, Seq) of each message it stored; a message
// whose idempotency key is taken returns no row. Columns arrive as arrays,
// one element per message in batch order (ord counts from 1); list columns
// as array literals, since PostgreSQL arrays cannot be jagged; targets as
// (ord, device) pairs.
//
// Seqs are drawn first and handed out in batch order whatever order nextval
// ran in. Targets are key-share locked before their entries are written: a
// device deleted concurrently is skipped, not left with an orphan entry.
const insertBatch = `
WITH input AS (
	SELECT * FROM unnest(
		$1::text[], $2::text[], $3::bool[], $4::bool[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
		$10::text[], $11::bool[], $12::text[], $13::text[], $14::int[], $15::text[], $16::bytea[], $17::bytea[],
		$18::interval[], $19::text[], $20::text[], $21::text[], $22::timestamptz[], $23::timestamptz[], $24::timestamptz[]
	) WITH ORDINALITY AS u(app, id, fanout, aud_all, aud_ids, aud_aliases, aud_tags, aud_tag_and, aud_tag_not,
		platforms, has_notification, n_title, n_body, n_badge, n_sound, n_extras, data,
		ttl, priority, collapse_id, idempotency_key, accepted_at, send_at, expires_at, ord)
), seqs AS (
	SELECT seq, row_number() OVER (ORDER BY seq) AS ord
	FROM (SELECT nextval('message_seq') AS seq FROM input) s
), targets AS (
	SELECT t.ord, d.id
	FROM unnest($25::bigint[], $26::text[]) AS t(ord, device)
	JOIN input ON input.ord = t.ord
	JOIN devices d ON d.id = t.device AND d.app = input.app
	FOR KEY SHARE OF d
), m AS (
	INSERT INTO messages (seq, app, id, fanout, aud_all, aud_ids, aud_aliases, aud_tags, aud_tag_and, aud_tag_not,
		platforms, has_notification, n_title, n_body, n_badge, n_sound, n_extras, data, ttl, priority,
		collapse_id, idempotency_key, accepted_at, send_at, expires_at, targeted)
	SELECT seqs.seq, i.app, i.id, i.fanout, i.aud_all, i.aud_ids::text[], i.aud_aliases::text[], i.aud_tags::text[],
		i.aud_tag_and::text[], i.aud_tag_not::text[], i.platforms::text[], i.has_notification, i.n_title, i.n_body,
		i.n_badge, i.n_sound, i.n_extras, i.data, i.ttl, i.priority, i.collapse_id, i.idempotency_key,
		i.accepted_at, i.send_at, i.expires_at, (SELECT count(*) FROM targets WHERE targets.ord = i.ord)
	FROM input i JOIN seqs ON seqs.ord = i.ord
	-- Keys in one global order, so that two batches waiting on each other's
	-- keys cannot deadlock; within a key, batch order: the first is stored.
	ORDER BY i.app, i.idempotency_key, i.ord
	ON CONFLICT (app, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
	RETURNING seq
), entries AS (
	INSERT INTO inbox (device_id, seq)
	SELECT targets.id, m.seq FROM targets JOIN seqs ON seqs.ord = targets.ord JOIN m ON m.seq = seqs.seq
)
SELECT seqs.ord, seqs.seq FROM seqs JOIN m ON m.seq = seqs.seq`

// findIdempotent finds the messages that hold the idempotency keys $3 of
// apps $2, for the batch positions $1. It is a statement of its own, after
// the insert, because in READ COMMITTED only a new statement's snapshot is
// sure to see a conflicting row that made the insert do nothing (it may have
// committed while the insert waited for it).
const findIdempotent = `
SELECT u.ord, m.id, m.seq
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(ord, app, key)
JOIN messages m ON m.app = u.app AND m.idempotency_key = u.key`

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

// Append implements store.Store. The batch is one transaction and one round
// trip: a single statement stores every message and inbox entry, then come
// the idempotency look-up and the collapses, in batch order, so a collapse
// sees the entries of earlier messages of the same batch. Commit is
// synchronous (Open insists on synchronous_commit), so the batch is durable
// when Append returns nil.
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
	for _, a := range batch {
		if a.Msg == nil {
			return nil, errors.New("postgres: append: nil message")
		}
	}
	args := batchArgs(batch)
	var keyOrd []int64
	var keyApp, keys []string
	for i, a := range batch {
		if a.Msg.IdempotencyKey != "" {
			keyOrd = append(keyOrd, int64(i+1))
			keyApp = append(keyApp, a.Msg.App)
			keys = append(keys, a.Msg.IdempotencyKey)
		}
	}
	// Collapses run grouped by collapse ID, in batch order within a group.
	// Collapses with different IDs touch different rows, so their order does
	// not matter to the outcome; what the grouping buys is that concurrent
	// Appends lock rows in one global order and do not deadlock.
	var collapseOrder []int
	for i, a := range batch {
		if a.Msg.CollapseID != "" {
			collapseOrder = append(collapseOrder, i)
		}
	}
	slices.SortStableFunc(collapseOrder, func(i, j int) int {
		return cmp.Or(strings.Compare(batch[i].Msg.App, batch[j].Msg.App),
			strings.Compare(batch[i].Msg.CollapseID, batch[j].Msg.CollapseID))
	})
	// A new pgx.Batch per attempt: a sent batch remembers statement
	// descriptions of the connection it went out on.
	collapses := 0
	newBatch := func() *pgx.Batch {
		b := &pgx.Batch{}
		b.Queue(insertBatch, args...)
		if keys != nil {
			b.Queue(findIdempotent, keyOrd, keyApp, keys)
		}
		collapses = 0
		for _, i := range collapseOrder {
			a := batch[i]
			m := a.Msg
			if len(a.Targets) > 0 {
				b.Queue(collapseInbox, m.App, m.ID, a.Targets, m.CollapseID, m.AcceptedAt)
				collapses++
			}
			if m.Fanout() {
				b.Queue(collapseFanout, m.App, m.ID, m.CollapseID, m.AcceptedAt)
				collapses++
			}
		}
		return b
	}

	out := make([]store.Accepted, len(batch))
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		clear(out)
		br := tx.SendBatch(ctx, newBatch())
		defer br.Close()
		stored := make([]bool, len(batch))
		var ord, seq int64
		rows, _ := br.Query()
		_, err := pgx.ForEachRow(rows, []any{&ord, &seq}, func() error {
			out[ord-1] = store.Accepted{ID: batch[ord-1].Msg.ID, Seq: uint64(seq)}
			stored[ord-1] = true
			return nil
		})
		if err != nil {
			return err
		}
		if keys != nil {
			var id string
			rows, _ := br.Query()
			_, err := pgx.ForEachRow(rows, []any{&ord, &id, &seq}, func() error {
				if !stored[ord-1] {
					out[ord-1] = store.Accepted{ID: id, Seq: uint64(seq), Duplicate: true}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		for i, a := range out {
			if a.ID == "" {
				// The insert found the key taken, yet the look-up finds no
				// holder: Sweep purged it in between. Retrying is safe.
				m := batch[i].Msg
				return fmt.Errorf("idempotency key %q of app %q vanished during the append; retry", m.IdempotencyKey, m.App)
			}
		}
		for range collapses {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return br.Close()
	})
	if err != nil {
		return nil, s.wrap("append", err)
	}
	return out, nil
}

// batchArgs are insertBatch's arguments $1 to $26.
func batchArgs(batch []store.Accept) []any {
	n := len(batch)
	var (
		app, id                                 = make([]string, n), make([]string, n)
		fanout, all, hasNote                    = make([]bool, n), make([]bool, n), make([]bool, n)
		ids, aliases, tags, tagAnd, tagNot, pls = make([]pgtype.Text, n), make([]pgtype.Text, n), make([]pgtype.Text, n), make([]pgtype.Text, n), make([]pgtype.Text, n), make([]pgtype.Text, n)
		title, body, sound                      = make([]pgtype.Text, n), make([]pgtype.Text, n), make([]pgtype.Text, n)
		badge                                   = make([]pgtype.Int4, n)
		extras, data                            = make([][]byte, n), make([][]byte, n)
		ttl                                     = make([]pgtype.Interval, n)
		priority                                = make([]string, n)
		collapseID, idemKey                     = make([]pgtype.Text, n), make([]pgtype.Text, n)
		accepted, send, expires                 = make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
		targetOrd                               []int64
		targets                                 []string
	)
	for i, a := range batch {
		m := a.Msg
		app[i], id[i], fanout[i], all[i] = m.App, m.ID, m.Fanout(), m.Audience.All
		ids[i], aliases[i] = arrayLiteral(m.Audience.RegistrationIDs), arrayLiteral(m.Audience.Aliases)
		tags[i], tagAnd[i], tagNot[i] = arrayLiteral(m.Audience.Tags), arrayLiteral(m.Audience.TagAnd), arrayLiteral(m.Audience.TagNot)
		pls[i] = arrayLiteral(m.Platforms)
		if nt := m.Notification; nt != nil {
			hasNote[i] = true
			title[i] = pgtype.Text{String: nt.Title, Valid: true}
			body[i] = pgtype.Text{String: nt.Body, Valid: true}
			sound[i] = pgtype.Text{String: nt.Sound, Valid: true}
			if nt.Badge != nil {
				badge[i] = pgtype.Int4{Int32: int32(*nt.Badge), Valid: true}
			}
			extras[i] = nt.Extras
		}
		data[i] = m.Data
		ttl[i] = pgtype.Interval{Microseconds: m.TTL.Microseconds(), Valid: true}
		priority[i] = string(m.Priority)
		collapseID[i], idemKey[i] = nullText(m.CollapseID), nullText(m.IdempotencyKey)
		accepted[i], send[i], expires[i] = m.AcceptedAt, m.SendAt, m.ExpiresAt
		seen := make(map[string]bool, len(a.Targets))
		for _, t := range a.Targets {
			if !seen[t] { // a repeated target gets one entry
				seen[t] = true
				targetOrd = append(targetOrd, int64(i+1))
				targets = append(targets, t)
			}
		}
	}
	return []any{app, id, fanout, all, ids, aliases, tags, tagAnd, tagNot, pls, hasNote, title, body, badge, sound,
		extras, data, ttl, priority, collapseID, idemKey, accepted, send, expires, targetOrd, targets}
}

// arrayLiteral writes list as a PostgreSQL text[] literal, every element
// quoted; nil stays NULL, so that nil and empty lists round-trip.
func arrayLiteral[S ~string](list []S) pgtype.Text {
	if list == nil {
		return pgtype.Text{}
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range list {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		arrayEscaper.WriteString(&b, string(e))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return pgtype.Text{String: b.String(), Valid: true}
}

var arrayEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

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
// top of this file), live at $6, in Seq order. Each arm is cut to the limit
// in Seq order before the union, since the first $7 of the union are among
// the first $7 of each arm: a device with a long backlog reads one page of
// it, not all of it. UNION makes a message that reaches the device both ways
// appear once.
var pendingQuery = `
WITH cand AS (
	(SELECT i.seq FROM inbox i JOIN messages f ON f.seq = i.seq
	WHERE i.device_id = $1 AND NOT f.recalled AND NOT f.replaced AND f.send_at <= $6 AND f.expires_at > $6
	ORDER BY i.seq LIMIT $7)
	UNION
	(SELECT f.seq FROM messages f
	WHERE f.app = $2 AND f.fanout AND NOT f.recalled AND NOT f.replaced AND NOT f.swept AND f.seq > $3
		AND f.send_at <= $6 AND f.expires_at > $6
		AND ` + matchSQL("$4", "$5") + `
		AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.device_id = $1 AND a.seq = f.seq)
	ORDER BY f.seq LIMIT $7)
)
SELECT ` + messageCols + ` FROM cand JOIN messages m ON m.seq = cand.seq
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
	var n int
	err := retry(func() error {
		b := &pgx.Batch{}
		b.Queue(`SELECT pg_advisory_xact_lock_shared($1, $2)`, sweepLockClass, s.sweepKey)
		b.Queue(ackQuery, d.ID, d.App, int64(d.FirstSeq), string(d.Platform), tagsArg(d.Tags), ids)
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
