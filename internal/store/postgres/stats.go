package postgres

import (
	"context"
	"time"

	"github.com/heraldpush/herald/internal/store"
)

// InboxStats implements store.Store.
func (s *Store) InboxStats(ctx context.Context) (store.InboxStats, error) {
	if err := s.check(); err != nil {
		return store.InboxStats{}, err
	}
	var st store.InboxStats
	var oldest *time.Time
	err := s.pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM inbox),
			(SELECT m.accepted_at FROM messages m WHERE m.seq = (SELECT min(seq) FROM inbox))`).Scan(&st.Entries, &oldest)
	if err != nil {
		return store.InboxStats{}, s.wrap("inbox stats", err)
	}
	if oldest != nil {
		st.Oldest = oldest.UTC()
	}
	return st, nil
}
