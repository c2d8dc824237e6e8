package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/internal/store"
)

// dueQuery reads the first $2+1 rows of the schedule in due order: those
// due at $1 (at most $2) with what waking their devices needs, and the one
// after them for its due time. The explicit targets are the inbox entries
// left, so that a collapse, an ack or a deleted device since Append is
// seen; rows not due get none, since they are only looked at for their
// time. No body column of messages is read (a TOASTed payload is not
// fetched unless selected).
const dueQuery = `
SELECT p.seq, p.send_at, p.send_at <= $1 AS due, m.app, m.id, m.fanout,
	CASE WHEN p.send_at <= $1 THEN ARRAY(SELECT i.device_id FROM inbox i WHERE i.seq = p.seq ORDER BY i.device_id) END
FROM (SELECT seq, send_at FROM scheduled ORDER BY send_at, seq LIMIT $2 + 1) p
JOIN messages m ON m.seq = p.seq
ORDER BY p.send_at, p.seq`

// Due implements store.Store.
func (s *Store) Due(ctx context.Context, now time.Time, limit int) ([]store.Scheduled, time.Time, error) {
	if err := s.check(); err != nil {
		return nil, time.Time{}, err
	}
	rows, err := s.pool.Query(ctx, dueQuery, now, max(limit, 0))
	if err != nil {
		return nil, time.Time{}, s.wrap("due", err)
	}
	var (
		out  []store.Scheduled
		next time.Time
		sc   store.Scheduled
		seq  int64
		due  bool
	)
	_, err = pgx.ForEachRow(rows, []any{&seq, &sc.SendAt, &due, &sc.App, &sc.ID, &sc.Fanout, &sc.Targets}, func() error {
		if !due || len(out) >= limit {
			if next.IsZero() {
				next = sc.SendAt.UTC()
			}
			return nil
		}
		sc.Seq, sc.SendAt = uint64(seq), sc.SendAt.UTC()
		if len(sc.Targets) == 0 {
			sc.Targets = nil // as the embedded store: no targets is nil
		}
		out = append(out, sc)
		sc.Targets = nil // scanned into afresh; out keeps its own slice
		return nil
	})
	if err != nil {
		return nil, time.Time{}, s.wrap("due", err)
	}
	return out, next, nil
}

// Fired implements store.Store.
func (s *Store) Fired(ctx context.Context, due []store.Scheduled) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(due) == 0 {
		return nil
	}
	seqs := make([]int64, len(due))
	for i, sc := range due {
		seqs[i] = int64(sc.Seq)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM scheduled WHERE seq = ANY($1)`, seqs); err != nil {
		return s.wrap("fired", err)
	}
	return nil
}
