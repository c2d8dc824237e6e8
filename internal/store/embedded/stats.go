package embedded

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/store"
)

// InboxStats implements store.Store: one pass over the inbox keys, whose
// last 8 bytes are the message's Seq; the oldest is the lowest Seq's.
func (s *Store) InboxStats(ctx context.Context) (store.InboxStats, error) {
	var st store.InboxStats
	err := s.readOne(ctx, func(r pebble.Reader) error {
		st = store.InboxStats{}
		minSeq := uint64(0)
		err := scan(r, key(tInbox), func(k, _ []byte) (bool, error) {
			if len(k) < 9 {
				return false, errCorrupt
			}
			seq := binary.BigEndian.Uint64(k[len(k)-8:])
			if st.Entries == 0 || seq < minSeq {
				minSeq = seq
			}
			st.Entries++
			return ctx.Err() == nil, ctx.Err()
		})
		if err != nil || st.Entries == 0 {
			return err
		}
		m, err := readMessage(r, minSeq)
		if errors.Is(err, store.ErrNotFound) {
			return nil // purged under the entry: the sweep takes it next
		}
		if err != nil {
			return err
		}
		st.Oldest = m.AcceptedAt
		return nil
	})
	return st, err
}

// Ping implements store.Store: a read of the engine.
func (s *Store) Ping(ctx context.Context) error {
	return s.readOne(ctx, func(r pebble.Reader) error {
		_, err := hasKey(r, key(tSeq))
		return err
	})
}
