package postgres

import "context"

// Ping reports whether PostgreSQL answers now, for /readyz: the store's
// reads may be served from what it keeps (apps), so a read alone does not
// tell.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.wrap("ping", s.pool.Ping(ctx))
}
