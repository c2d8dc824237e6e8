package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// The schedule table ('q') holds one row per scheduled message that has not
// fired, keyed by due time so that the earliest is the first key. Its value
// is what Due returns without reading the message record, whose body may
// be kilobytes: the app, the ID and whether the message fans out. The
// targets come from the 't' row and the inbox entries, so that a collapse,
// an ack or a deleted device is seen at the moment the message fires.
//
// Fired deletes rows one by one rather than as one range: a message
// appended with a SendAt already behind the range (accepted just before it
// was due) must not be dropped without having fired.

// scheduled reports whether m has a schedule row: whether it was accepted
// for later. Messages that are sent at once have none, and cost nothing
// here.
func scheduled(m *push.Message) bool { return m.SendAt.After(m.AcceptedAt) }

func encodeSched(m *push.Message) []byte {
	e := enc{recordV1}
	e.str(m.App)
	e.str(m.ID)
	e.bool(m.Fanout())
	return e
}

func decodeSched(k, v []byte) (store.Scheduled, error) {
	if len(k) != 1+8+8 {
		return store.Scheduled{}, fmt.Errorf("%w: schedule key", errCorrupt)
	}
	d := dec{b: v}
	d.version()
	sc := store.Scheduled{Seq: seqSuffix(k), App: d.str(), ID: d.str(), Fanout: d.bool()}
	if d.err != nil {
		return store.Scheduled{}, d.err
	}
	sc.SendAt = time.Unix(0, int64(binary.BigEndian.Uint64(k[1:9])^1<<63)).UTC() // timeOrder undone
	return sc, nil
}

// schedule writes m's schedule row if it is scheduled; append calls it in
// the same batch as the message.
func (w *writeTx) schedule(m *push.Message) {
	if scheduled(m) {
		w.set(kSched(m.SendAt, m.Seq), encodeSched(m))
	}
}

// unschedule deletes m's schedule row, if it has one: m was recalled or
// replaced and must not wake anyone, or it is being purged. Expiry alone
// leaves the row for the scheduler to fire and skip: a message with a TTL
// of 0 expires the instant it is due, and must still reach the devices
// connected then, whether or not a sweep ran first.
func (w *writeTx) unschedule(m *push.Message) {
	if scheduled(m) {
		w.del(kSched(m.SendAt, m.Seq))
	}
}

// Due implements store.Store.
func (s *Store) Due(ctx context.Context, now time.Time, limit int) ([]store.Scheduled, time.Time, error) {
	var (
		out  []store.Scheduled
		next time.Time
	)
	err := s.read(ctx, func(r pebble.Reader) error {
		out, next = nil, time.Time{}
		hi := kSched(now.Add(time.Nanosecond), 0) // SendAt <= now: push.Message.Due
		return scan(r, key(tSched), func(k, v []byte) (bool, error) {
			sc, err := decodeSched(k, v)
			if err != nil {
				return false, err
			}
			if len(out) >= limit || bytes.Compare(k, hi) >= 0 {
				next = sc.SendAt
				return false, nil
			}
			if sc.Targets, err = waitingTargets(r, sc.Seq); err != nil {
				return false, err
			}
			out = append(out, sc)
			return true, nil
		})
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	return out, next, nil
}

// waitingTargets returns the explicit targets of message seq whose inbox
// entry is still there, in ID order (the 't' row is sorted).
func waitingTargets(r pebble.Reader, seq uint64) ([]string, error) {
	v, err := getValue(r, kTargets(seq))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var devs []string
	if err := eachTarget(v, func(dev string) { devs = append(devs, dev) }); err != nil {
		return nil, err
	}
	inbox, err := newPointIter(r, key(tInbox))
	if err != nil {
		return nil, err
	}
	defer inbox.close()
	waiting := devs[:0]
	for _, dev := range devs {
		if _, ok := inbox.get(kInbox(dev, seq)); ok {
			waiting = append(waiting, dev)
		} else if err := inbox.err(); err != nil {
			return nil, err
		}
	}
	return waiting, nil
}

// Fired implements store.Store.
func (s *Store) Fired(ctx context.Context, due []store.Scheduled) error {
	if len(due) == 0 {
		return nil
	}
	return s.write(ctx, func(w *writeTx) error {
		for _, sc := range due {
			w.del(kSched(sc.SendAt, sc.Seq))
		}
		return nil
	})
}
