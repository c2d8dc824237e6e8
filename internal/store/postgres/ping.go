package postgres

import "context"

// Ping implements store.Store: PostgreSQL itself, since reads may be
// served from what the store keeps (apps).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.wrap("ping", s.pool.Ping(ctx))
}
