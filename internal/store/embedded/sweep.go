package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// sweepChunk is how many messages one sweep step handles. Each step is one
// writer group, so appends wait for at most one step, not a whole sweep.
const sweepChunk = 256

// Sweep retires messages that expired by now (their inbox entries,
// fan-out index row and acknowledgements go; the message and its counters
// stay for its report) and purges messages whose ExpiresAt is before
// now-retain. Recalled and replaced messages are retired when that happens,
// so Sweep only has expiry to deal with.
func (s *Store) Sweep(ctx context.Context, now time.Time, retain time.Duration) (int, error) {
	for more := true; more; {
		if err := s.write(ctx, func(w *writeTx) (err error) {
			more, err = w.retireExpired(now)
			return err
		}); err != nil {
			return 0, err
		}
	}
	purged := 0
	for more := true; more; {
		n := 0
		if err := s.write(ctx, func(w *writeTx) (err error) {
			n, more, err = w.purge(now.Add(-retain))
			return err
		}); err != nil {
			return purged, err
		}
		purged += n
	}
	return purged, nil
}

// retireExpired retires up to sweepChunk messages that expired by now,
// walking the expiry index from the sweep cursor, which it advances: the
// messages behind it are retired already, so a sweep costs what expired
// since the last one rather than everything kept for reports. It reports
// whether there may be more.
//
// A message appended with an ExpiresAt behind the cursor (only possible
// with clocks that disagree) is not retired before it is purged; that
// leaves its rows for longer, never delivers it (Pending checks Live).
func (w *writeTx) retireExpired(now time.Time) (bool, error) {
	lo := key(tExpiry)
	if c, err := w.get(key(tSweep)); err == nil {
		lo = append(c, 0) // the key right after the cursor
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	hi := kExpiry(now.Add(time.Nanosecond), 0) // ExpiresAt <= now: push.Message.Expired
	if bytes.Compare(lo, hi) >= 0 {
		return false, nil
	}
	var last []byte
	var msgs []*push.Message
	err := scanRange(w.b, lo, hi, func(k, _ []byte) (bool, error) {
		m, err := readMessage(w.b, seqSuffix(k))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
		if m != nil {
			msgs = append(msgs, m)
		}
		last = append(last[:0], k...)
		return len(msgs) < sweepChunk, nil
	})
	if err != nil || last == nil {
		return false, err
	}
	for _, m := range msgs {
		if err := w.retire(m); err != nil {
			return false, err
		}
	}
	w.set(key(tSweep), last)
	return len(msgs) == sweepChunk, nil
}

// purge deletes up to sweepChunk messages whose ExpiresAt is before cutoff,
// with every row that refers to them, and reports how many and whether
// there may be more.
func (w *writeTx) purge(cutoff time.Time) (int, bool, error) {
	lo, hi := key(tExpiry), kExpiry(cutoff, 0)
	var last []byte
	var msgs []*push.Message
	err := scanRange(w.b, lo, hi, func(k, _ []byte) (bool, error) {
		m, err := readMessage(w.b, seqSuffix(k))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
		if m != nil {
			msgs = append(msgs, m)
		}
		last = append(last[:0], k...)
		return len(msgs) < sweepChunk, nil
	})
	if err != nil || last == nil {
		return 0, false, err
	}
	for _, m := range msgs {
		if err := w.purgeMessage(m); err != nil {
			return 0, false, err
		}
	}
	// One range deletion for the index rows walked: the next purge
	// then skips them without stepping over a tombstone per row.
	w.b.DeleteRange(lo, append(last, 0), nil)
	return len(msgs), len(msgs) == sweepChunk, nil
}

// purgeMessage deletes m and every row that refers to it.
func (w *writeTx) purgeMessage(m *push.Message) error {
	if err := w.retire(m); err != nil {
		return err
	}
	seq := m.Seq
	// Index rows that name m by Seq go only if they still name m: a newer
	// message may have taken the idempotency key or collapse ID over.
	delIfSeq := func(k []byte) error {
		v, err := w.get(k)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(v) >= 8 && binary.BigEndian.Uint64(v) == seq {
			w.del(k)
		}
		return nil
	}
	if m.IdempotencyKey != "" {
		if err := delIfSeq(kIdem(m.App, m.IdempotencyKey)); err != nil {
			return err
		}
	}
	if m.CollapseID != "" {
		if m.Fanout() {
			if err := delIfSeq(kFanColl(m.App, m.CollapseID)); err != nil {
				return err
			}
		}
		v, err := w.get(kTargets(seq))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		var devs []string
		if err := eachTarget(v, func(dev string) { devs = append(devs, dev) }); err != nil {
			return err
		}
		for _, dev := range devs {
			if err := delIfSeq(kCollapse(dev, m.CollapseID)); err != nil {
				return err
			}
		}
	}
	w.unschedule(m)
	if err := w.purgeRelays(seq); err != nil {
		return err
	}
	w.del(kMsg(seq))
	w.del(kMsgID(m.App, m.ID))
	w.del(kAppMsg(m.App, seq))
	w.del(kCounters(seq))
	w.del(kTargets(seq))
	return nil
}
