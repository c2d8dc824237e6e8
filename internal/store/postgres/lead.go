package postgres

import (
	"context"
	"hash/fnv"
	"time"
)

// leadLockClass is the advisory lock class of Lead's leases; the key is a
// hash of the lease's name and the schema, so that stores in different
// schemas lead apart.
const leadLockClass int32 = 0x48524c4c // "HRLL"

// leadPoll is how often a node that does not hold a lease tries again, and
// how often the holder checks its connection.
const leadPoll = 2 * time.Second

// Lead implements store.Store with a session advisory lock held on one
// connection taken from the pool for as long as the lease lasts: the lock
// goes with the session, so a node that dies or loses its connection
// frees it for another at once (PostgreSQL ends the session).
func (s *Store) Lead(ctx context.Context, name string) (<-chan struct{}, func(), error) {
	h := fnv.New32a()
	h.Write([]byte(name))
	key := int32(h.Sum32()) ^ s.sweepKey
	for {
		if err := s.check(); err != nil {
			return nil, nil, err
		}
		conn, err := s.pool.Acquire(ctx)
		if err == nil {
			var got bool
			if err = conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, leadLockClass, key).Scan(&got); err == nil && got {
				lost := make(chan struct{})
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					t := time.NewTicker(leadPoll)
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							pctx, cancel := context.WithTimeout(context.Background(), leadPoll)
							err := conn.Ping(pctx)
							cancel()
							if err != nil {
								close(lost)
								return
							}
						}
					}
				}()
				release := func() {
					close(stop)
					<-done
					uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1, $2)`, leadLockClass, key); err != nil {
						conn.Conn().Close(uctx) // the session ends, and the lock with it
					}
					conn.Release()
				}
				return lost, release, nil
			}
			conn.Release()
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		t := time.NewTimer(leadPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-t.C:
		}
	}
}
