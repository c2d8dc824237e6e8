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
	m.priority, m.collapse_id, m.idempotency_key, m.accepted_at, m.send_at, m.expires_at, m.recalled, m.replaced,
	m.channel`

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
		priority, channel      string
		collapseID, idemKey    pgtype.Text
		accepted, send, expiry time.Time
	)
	dest := append([]any{&seq, &m.App, &m.ID, &m.Audience.All, &m.Audience.RegistrationIDs, &m.Audience.Aliases,
		&m.Audience.Tags, &m.Audience.TagAnd, &m.Audience.TagNot, &platforms, &hasNote, &title, &body, &badge, &sound,
		&extras, &data, &ttl, &priority, &collapseID, &idemKey, &accepted, &send, &expiry, &m.Recalled, &m.Replaced,
		&channel},
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
	m.Channel = push.ChannelPolicy(channel)
	m.CollapseID, m.IdempotencyKey = collapseID.String, idemKey.String
	m.AcceptedAt, m.SendAt, m.ExpiresAt = accepted.UTC(), send.UTC(), expiry.UTC()
	return m, nil
}

// insertBatch stores a batch of messages and their inbox entries in one
// statement and returns, for each message (ord counts from 1, in batch
// order), the Seq and ID of the message that holds it and whether that is
// the new one. Columns arrive as arrays, one element per message; list
// columns as array literals, since PostgreSQL arrays cannot be jagged;
// targets as (ord, device, app) triples, relay jobs as (ord, device,
// channel, due, attempt). Within the batch, idempotency keys are unique
// (Append sees to it). A duplicate message gets no inbox entries and no
// relay jobs: the message that holds its key has them.
//
// Seqs are drawn first and handed out in batch order whatever order nextval
// ran in. A taken idempotency key is resolved by ON CONFLICT DO UPDATE, a
// no-op update that locks the holder and returns it, even one that committed
// after this statement began: DO NOTHING would return nothing, and a later
// look-up could find the holder purged in between. xmax = 0 tells a row
// this statement inserted from one it only locked. Keys are inserted in key
// order, so two batches waiting on each other's keys cannot deadlock.
// Targets are key-share locked before their entries are written: a device
// deleted concurrently is skipped, not left with an orphan entry.
const insertBatchHead = `
WITH input AS (
	SELECT * FROM unnest(
		$1::text[], $2::text[], $3::bool[], $4::bool[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
		$10::text[], $11::bool[], $12::text[], $13::text[], $14::int[], $15::text[], $16::bytea[], $17::bytea[],
		$18::interval[], $19::text[], $20::text[], $21::text[], $22::timestamptz[], $23::timestamptz[], $24::timestamptz[],
		$25::text[]
	) WITH ORDINALITY AS u(app, id, fanout, aud_all, aud_ids, aud_aliases, aud_tags, aud_tag_and, aud_tag_not,
		platforms, has_notification, n_title, n_body, n_badge, n_sound, n_extras, data,
		ttl, priority, collapse_id, idempotency_key, accepted_at, send_at, expires_at, channel, ord)
), seqs AS (
	SELECT seq, row_number() OVER (ORDER BY seq) AS ord
	FROM (SELECT nextval('message_seq') AS seq FROM input) s
), targets AS (
	SELECT t.ord, d.id
	FROM unnest($26::bigint[], $27::text[], $28::text[]) AS t(ord, device, app)
	JOIN devices d ON d.id = t.device AND d.app = t.app
	FOR KEY SHARE OF d
), counts AS (
	SELECT ord, count(*) AS n FROM targets GROUP BY ord
), m AS (
	INSERT INTO messages (seq, app, id, fanout, aud_all, aud_ids, aud_aliases, aud_tags, aud_tag_and, aud_tag_not,
		platforms, has_notification, n_title, n_body, n_badge, n_sound, n_extras, data, ttl, priority,
		collapse_id, idempotency_key, accepted_at, send_at, expires_at, channel, targeted)
	SELECT seqs.seq, i.app, i.id, i.fanout, i.aud_all, i.aud_ids::text[], i.aud_aliases::text[], i.aud_tags::text[],
		i.aud_tag_and::text[], i.aud_tag_not::text[], i.platforms::text[], i.has_notification, i.n_title, i.n_body,
		i.n_badge, i.n_sound, i.n_extras, i.data, i.ttl, i.priority, i.collapse_id, i.idempotency_key,
		i.accepted_at, i.send_at, i.expires_at, i.channel, coalesce(counts.n, 0)
	FROM input i JOIN seqs ON seqs.ord = i.ord LEFT JOIN counts ON counts.ord = i.ord
	ORDER BY i.app, i.idempotency_key
`

const onConflictKey = `
	ON CONFLICT (app, idempotency_key) WHERE idempotency_key IS NOT NULL
	DO UPDATE SET idempotency_key = messages.idempotency_key
`

const insertBatchTail = `	RETURNING seq, app, id, idempotency_key, xmax = 0 AS inserted, send_at, send_at > accepted_at AS scheduled
), sched AS (
	INSERT INTO scheduled (seq, send_at) SELECT seq, send_at FROM m WHERE inserted AND scheduled
), found AS (
	-- Every join an equality, so that big batches hash rather than loop.
	SELECT seqs.ord, m.seq, m.id, true AS inserted FROM m JOIN seqs ON seqs.seq = m.seq WHERE m.inserted
	UNION ALL
	SELECT i.ord, m.seq, m.id, false FROM m JOIN input i ON i.app = m.app AND i.idempotency_key = m.idempotency_key
	WHERE NOT m.inserted
), entries AS (
	INSERT INTO inbox (device_id, seq)
	SELECT targets.id, found.seq FROM targets JOIN found ON found.ord = targets.ord AND found.inserted
), relays AS (
	INSERT INTO relay_jobs (seq, device, app, msg_id, channel, due_at, attempt, wait)
	SELECT found.seq, r.device, i.app, found.id, r.channel, r.due_at, r.attempt, r.wait
	FROM unnest($29::bigint[], $30::text[], $31::text[], $32::timestamptz[], $33::int[], $34::bigint[]) AS r(ord, device, channel, due_at, attempt, wait)
	JOIN found ON found.ord = r.ord AND found.inserted
	JOIN input i ON i.ord = r.ord
)
SELECT ord, seq, id, inserted FROM found`

// insertBatch is the statement; insertBatchNoKeys is the same for a batch
// without idempotency keys, where the conflict clause (speculative insertion,
// about a quarter of the statement's cost) can never fire.
const (
	insertBatch       = insertBatchHead + onConflictKey + insertBatchTail
	insertBatchNoKeys = insertBatchHead + insertBatchTail
)

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
// replaced, and takes those still scheduled off the schedule.
const collapseFanout = `
WITH r AS (
	UPDATE messages o SET replaced = true
	FROM (SELECT seq FROM messages WHERE app = $1 AND id = $2) k
	WHERE o.app = $1 AND o.collapse_id = $3 AND o.fanout AND o.seq < k.seq
		AND NOT o.recalled AND NOT o.replaced AND o.expires_at > $4
	RETURNING o.seq
)
DELETE FROM scheduled s USING r WHERE s.seq = r.seq`

// Append implements store.Store. Concurrent Appends share a transaction
// (group.go); each returns once that transaction committed, synchronously
// (Open insists on synchronous_commit), so the batch is durable when Append
// returns nil.
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
	out, err := s.appends.do(ctx, batch)
	if err != nil {
		return nil, err
	}
	// Each new message gets its Seq, as the embedded store sets it; a
	// duplicate was not stored and keeps none. Set here, not by the
	// writer: the messages are the caller's.
	for i, a := range out {
		if !a.Duplicate {
			batch[i].Msg.Seq = a.Seq
		}
	}
	return out, nil
}

// appendBatch stores batch in one implicit transaction in one round trip:
// a single statement stores every message and inbox entry, then come the
// collapses.
//
// Collapses run after all the inserts, grouped by collapse ID and in batch
// order within a group, so a collapse sees the entries of earlier messages
// of its batch. Collapses with different IDs touch different rows, so their
// order does not matter to the outcome; the grouping makes concurrent
// batches lock rows in one order, so they do not deadlock. A new message
// replaces older ones that are live at its AcceptedAt: not recalled, not
// replaced and not expired; older ones still scheduled are replaced too.
func (s *Store) appendBatch(ctx context.Context, batch []store.Accept) ([]store.Accepted, error) {
	// The first message of the batch with a key is sent; later ones with
	// the same key are its duplicates and are not.
	type appKey struct{ app, key string }
	first := map[appKey]int{}
	dupOf := make([]int, len(batch))
	var send []int // indexes into batch
	for i, a := range batch {
		dupOf[i] = -1
		if k := a.Msg.IdempotencyKey; k != "" {
			if j, ok := first[appKey{a.Msg.App, k}]; ok {
				dupOf[i] = j
				continue
			}
			first[appKey{a.Msg.App, k}] = i
		}
		send = append(send, i)
	}
	args := batchArgs(batch, send)
	var collapseOrder []int
	for _, i := range send {
		if batch[i].Msg.CollapseID != "" {
			collapseOrder = append(collapseOrder, i)
		}
	}
	slices.SortStableFunc(collapseOrder, func(i, j int) int {
		return cmp.Or(strings.Compare(batch[i].Msg.App, batch[j].Msg.App),
			strings.Compare(batch[i].Msg.CollapseID, batch[j].Msg.CollapseID))
	})

	out := make([]store.Accepted, len(batch))
	err := retry(func() error {
		// A new pgx.Batch per attempt: a sent batch remembers statement
		// descriptions of the connection it went out on.
		b := &pgx.Batch{}
		if len(first) > 0 {
			b.Queue(insertBatch, args...)
		} else {
			b.Queue(insertBatchNoKeys, args...)
		}
		collapses := 0
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
		br := s.pool.SendBatch(ctx, b)
		defer br.Close()
		var (
			ord, seq int64
			id       string
			inserted bool
		)
		rows, _ := br.Query()
		_, err := pgx.ForEachRow(rows, []any{&ord, &seq, &id, &inserted}, func() error {
			out[send[ord-1]] = store.Accepted{ID: id, Seq: uint64(seq), Duplicate: !inserted}
			return nil
		})
		if err != nil {
			return err
		}
		for range collapses {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return br.Close() // commits: the implicit transaction ends here
	})
	if err != nil {
		return nil, s.wrap("append", err)
	}
	for i, j := range dupOf {
		if j >= 0 {
			out[i] = store.Accepted{ID: out[j].ID, Seq: out[j].Seq, Duplicate: true}
		}
	}
	return out, nil
}

// batchArgs are insertBatch's arguments $1 to $34 for the messages
// batch[send[0]], batch[send[1]]...
func batchArgs(batch []store.Accept, send []int) []any {
	n := len(send)
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
		accepted, sendAt, expires               = make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
		channel                                 = make([]string, n)
		targetOrd                               []int64
		targets, targetApp                      []string
		relayOrd                                []int64
		relayDev, relayChan                     []string
		relayDue                                []time.Time
		relayAttempt                            []int32
		relayWait                               []int64
	)
	for i, bi := range send {
		a := batch[bi]
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
		accepted[i], sendAt[i], expires[i] = m.AcceptedAt, m.SendAt, m.ExpiresAt
		channel[i] = string(m.Channel)
		seen := make(map[string]bool, len(a.Targets))
		for _, t := range a.Targets {
			if !seen[t] { // a repeated target gets one entry
				seen[t] = true
				targetOrd = append(targetOrd, int64(i+1))
				targets = append(targets, t)
				targetApp = append(targetApp, m.App)
			}
		}
		clear(seen)
		for _, j := range a.Relays {
			if !seen[j.Device] { // one job per device, as one entry
				seen[j.Device] = true
				relayOrd = append(relayOrd, int64(i+1))
				relayDev = append(relayDev, j.Device)
				relayChan = append(relayChan, string(j.Channel))
				relayDue = append(relayDue, j.Due)
				relayAttempt = append(relayAttempt, int32(j.Attempt))
				relayWait = append(relayWait, int64(j.Wait))
			}
		}
	}
	return []any{app, id, fanout, all, ids, aliases, tags, tagAnd, tagNot, pls, hasNote, title, body, badge, sound,
		extras, data, ttl, priority, collapseID, idemKey, accepted, sendAt, expires, channel,
		targetOrd, targets, targetApp, relayOrd, relayDev, relayChan, relayDue, relayAttempt, relayWait}
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
// the row plus the acknowledgements still kept as rows. The relay counters
// come in the same round trip, from the message's few relay_outcomes rows.
func (s *Store) Message(ctx context.Context, app, id string) (push.Message, store.Counters, error) {
	if err := s.check(); err != nil {
		return push.Message{}, store.Counters{}, err
	}
	b := &pgx.Batch{}
	b.Queue(`
		SELECT `+messageCols+`, m.targeted, m.delivered + (SELECT count(*) FROM acks a WHERE a.seq = m.seq), m.n_replaced
		FROM messages m WHERE m.app = $1 AND m.id = $2`, app, id)
	b.Queue(`
		SELECT o.channel, o.result, o.reason, o.count
		FROM relay_outcomes o JOIN messages m ON m.seq = o.seq
		WHERE m.app = $1 AND m.id = $2`, app, id)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	var c store.Counters
	m, err := scanMessage(br.QueryRow(), &c.Targeted, &c.Delivered, &c.Replaced)
	if err == nil {
		var (
			channel, result, reason string
			n                       int
		)
		rows, _ := br.Query()
		_, err = pgx.ForEachRow(rows, []any{&channel, &result, &reason, &n}, func() error {
			addOutcome(&c, push.ChannelKind(channel), result, reason, n)
			return nil
		})
	}
	if err == nil {
		err = br.Close()
	}
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
	var n int
	err := s.pool.QueryRow(ctx, `
		WITH r AS (UPDATE messages SET recalled = true WHERE app = $1 AND id = $2 RETURNING seq),
		unscheduled AS (DELETE FROM scheduled s USING r WHERE s.seq = r.seq)
		SELECT count(*) FROM r`, app, id).Scan(&n)
	if err != nil {
		return s.wrap("recall", err)
	}
	if n == 0 {
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
// appear once. The device's fan-out acks are excluded with NOT IN rather
// than NOT EXISTS: PostgreSQL reads them once into a hash (a hashed
// SubPlan), where with NOT EXISTS and its poor estimate of the candidates it
// picks a nested loop that scans them once per candidate. There are no more
// of them than the app has fan-out messages not yet swept, the candidates
// themselves, so the hash stays small. A vendor_only fan-out message is not
// for the own connection of a device with an active vendor channel ($8,
// push.Message.ForOwn): it reaches that device through its vendor.
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
		AND NOT ($8 AND f.channel = '` + string(push.VendorOnly) + `')
		AND f.seq NOT IN (SELECT a.seq FROM acks a WHERE a.device_id = $1 AND a.seq > $3 AND a.fanout)
	ORDER BY f.seq LIMIT $7)
)
SELECT ` + messageCols + ` FROM cand JOIN messages m ON m.seq = cand.seq
ORDER BY m.seq
LIMIT $7`

// Pending implements store.Store.
func (s *Store) Pending(ctx context.Context, d *push.Device, now time.Time, limit, maxBytes int) ([]push.Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, pendingQuery, d.ID, d.App, int64(d.FirstSeq), string(d.Platform), tagsArg(d.Tags), now, limit,
		d.Channel.Vendor())
	if err != nil {
		return nil, s.wrap("pending", err)
	}
	defer rows.Close()
	var msgs []push.Message
	size := 0
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, s.wrap("pending", err)
		}
		msgs = append(msgs, m)
		// Rows past the budget are not read: closing the rows leaves
		// them on the server.
		if size += m.Size(); maxBytes > 0 && size >= maxBytes {
			return msgs, nil
		}
	}
	if err := rows.Err(); err != nil {
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
// Ack has key-share locked the device row beforehand, so the device either
// exists until commit or not at all: an ack is never written for a device
// that DeleteDevice has just removed.
var ackQuery = `
WITH m AS (
	SELECT f.seq, f.fanout, f.fanout AND f.seq > $3 AND ` + matchSQL("$4", "$5") + ` AS meant
	FROM messages f WHERE f.app = $2 AND f.id = ANY($6) AND NOT f.swept
), gone AS (
	DELETE FROM inbox i USING m WHERE i.device_id = $1 AND i.seq = m.seq
	RETURNING i.seq
), acked AS (
	INSERT INTO acks (device_id, seq, fanout)
	SELECT $1, m.seq, m.fanout FROM m
	WHERE (m.meant OR m.seq IN (SELECT seq FROM gone)) AND EXISTS (SELECT 1 FROM devices WHERE id = $1)
	ON CONFLICT DO NOTHING
	RETURNING 1
)
SELECT count(*) FROM acked`

// Ack implements store.Store. It runs as one pipelined implicit transaction
// that takes its locks in the order DeleteDevice does: the store's sweep
// lock in shared mode, then the device row. Acknowledgements never wait for
// each other, while Sweep, which takes the sweep lock exclusively, never
// folds and deletes a message's acks while one is being added; once a
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
		b.Queue(`SELECT 1 FROM devices WHERE id = $1 FOR KEY SHARE`, d.ID)
		b.Queue(ackQuery, d.ID, d.App, int64(d.FirstSeq), string(d.Platform), tagsArg(d.Tags), ids)
		br := s.pool.SendBatch(ctx, b)
		_, err := br.Exec()
		if err == nil {
			_, err = br.Exec()
		}
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

// purge deletes up to $2 swept messages that expired before $1, their
// schedule rows if they never fired, and their relay jobs and counters.
// They have no inbox entries or acks left: Sweep deleted those when it
// marked them swept, and nothing adds any to a swept message. Nothing adds
// relay rows meanwhile either: the relay's writes hold the sweep lock
// shared (see RelayDone).
const purge = `
WITH gone AS (
	DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE swept AND expires_at < $1 LIMIT $2)
	RETURNING seq
), unscheduled AS (
	DELETE FROM scheduled s USING gone WHERE s.seq = gone.seq
), jobs AS (
	DELETE FROM relay_jobs j USING gone WHERE j.seq = gone.seq
), outcomes AS (
	DELETE FROM relay_outcomes o USING gone WHERE o.seq = gone.seq
)
SELECT count(*) FROM gone`

// Sweep implements store.Store, in transactions of at most sweepChunk
// messages, each holding the sweep lock exclusively (see Ack). Several nodes
// may sweep at once: the lock takes them in turn and the second finds
// nothing left. Only swept (dead) messages are purged, so a retain below
// zero counts as zero.
func (s *Store) Sweep(ctx context.Context, now time.Time, retain time.Duration) (int, error) {
	retain = max(retain, 0)
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
