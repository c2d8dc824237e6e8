package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Append makes batch durable in one commit, shared with whatever other
// changes are waiting (group commit). Each new message gets the next Seq and
// sets it in its Msg.
func (s *Store) Append(ctx context.Context, batch []store.Accept) ([]store.Accepted, error) {
	for i, a := range batch {
		if a.Msg == nil || a.Msg.ID == "" || a.Msg.App == "" {
			return nil, fmt.Errorf("embedded: append: accept %d has no message, ID or app", i)
		}
	}
	out := make([]store.Accepted, len(batch))
	err := s.write(ctx, func(w *writeTx) error {
		for i, a := range batch {
			res, err := w.append(a)
			if err != nil {
				return err
			}
			out[i] = res
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// append stores one message. It fails only on an engine error, which
// aborts the whole group (see commit), so a half-written message is never
// committed.
func (w *writeTx) append(a store.Accept) (store.Accepted, error) {
	m := a.Msg
	if m.IdempotencyKey != "" {
		v, err := w.get(kIdem(m.App, m.IdempotencyKey))
		switch {
		case err == nil && len(v) > 8:
			return store.Accepted{ID: string(v[8:]), Seq: binary.BigEndian.Uint64(v), Duplicate: true}, nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return store.Accepted{}, err
		}
	}
	// Look up everything collapse needs before the first write.
	targets := slices.Clone(a.Targets)
	slices.Sort(targets)
	targets = slices.Compact(targets)
	type drop struct {
		dev string
		seq uint64
	}
	var drops []drop
	var replaced *push.Message
	if m.CollapseID != "" {
		for _, dev := range targets {
			old, ok, err := w.liveCollapsed(kCollapse(dev, m.CollapseID), m.AcceptedAt)
			if err != nil {
				return store.Accepted{}, err
			}
			if ok {
				if has, err := w.has(kInbox(dev, old.Seq)); err != nil {
					return store.Accepted{}, err
				} else if has {
					drops = append(drops, drop{dev, old.Seq})
				}
			}
		}
		if m.Fanout() {
			old, ok, err := w.liveCollapsed(kFanColl(m.App, m.CollapseID), m.AcceptedAt)
			if err != nil {
				return store.Accepted{}, err
			}
			if ok && !old.Replaced {
				replaced = old
			}
		}
	}
	replacedCounts := map[uint64]counters{}
	for _, d := range drops {
		if _, ok := replacedCounts[d.seq]; !ok {
			c, err := w.counters(d.seq)
			if err != nil {
				return store.Accepted{}, err
			}
			replacedCounts[d.seq] = c
		}
	}

	// Writes from here on.
	m.Seq = w.nextSeq()
	w.set(kMsg(m.Seq), encodeMessage(m))
	w.set(kMsgID(m.App, m.ID), binary.BigEndian.AppendUint64(nil, m.Seq))
	w.set(kAppMsg(m.App, m.Seq), nil)
	w.set(kCounters(m.Seq), encodeCounters(counters{targeted: uint64(len(targets))}))
	w.set(kExpiry(m.ExpiresAt, m.Seq), nil)
	w.schedule(m)
	w.appendRelays(m, a.Relays)
	if m.IdempotencyKey != "" {
		w.set(kIdem(m.App, m.IdempotencyKey), append(binary.BigEndian.AppendUint64(nil, m.Seq), m.ID...))
	}
	if len(targets) > 0 {
		w.set(kTargets(m.Seq), encodeTargets(targets))
	}
	for _, d := range drops {
		w.del(kInbox(d.dev, d.seq))
		c := replacedCounts[d.seq]
		c.replaced++
		replacedCounts[d.seq] = c
	}
	for seq, c := range replacedCounts {
		w.set(kCounters(seq), encodeCounters(c))
	}
	for _, dev := range targets {
		w.set(kInbox(dev, m.Seq), nil)
		if m.CollapseID != "" {
			w.set(kCollapse(dev, m.CollapseID), binary.BigEndian.AppendUint64(nil, m.Seq))
		}
	}
	if m.Fanout() {
		w.set(kFanout(m.App, m.Seq), nil)
		if m.CollapseID != "" {
			w.set(kFanColl(m.App, m.CollapseID), binary.BigEndian.AppendUint64(nil, m.Seq))
		}
		if replaced != nil {
			replaced.Replaced = true
			w.set(kMsg(replaced.Seq), encodeMessage(replaced))
			w.unschedule(replaced)
			if err := w.retire(replaced); err != nil {
				return store.Accepted{}, err
			}
		}
	}
	return store.Accepted{ID: m.ID, Seq: m.Seq}, nil
}

// liveCollapsed follows a collapse index row to the message it names, if
// that message is still live at now apart from its schedule: a message
// that is due later is waiting and can be replaced, one that expired or
// was recalled is gone already and is not counted as replaced.
func (w *writeTx) liveCollapsed(k []byte, now time.Time) (*push.Message, bool, error) {
	v, err := w.get(k)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil || len(v) != 8 {
		return nil, false, orErr(err, errCorrupt)
	}
	m, err := readMessage(w.b, binary.BigEndian.Uint64(v))
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil // purged
	}
	if err != nil {
		return nil, false, err
	}
	return m, !m.Recalled && !m.Expired(now), nil
}

// retire deletes what lets devices receive m, once m can never be delivered
// again (recalled, replaced or expired): its inbox entries, its fan-out
// index row and its acknowledgements. The message and its counters stay for
// its report.
func (w *writeTx) retire(m *push.Message) error {
	if m.Fanout() {
		w.del(kFanout(m.App, m.Seq))
		w.b.DeleteRange(kAckPrefix(m.Seq), kAckPrefix(m.Seq+1), nil)
	}
	v, err := w.get(kTargets(m.Seq))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return eachTarget(v, func(dev string) { w.del(kInbox(dev, m.Seq)) })
}

func (w *writeTx) counters(seq uint64) (counters, error) {
	v, err := w.get(kCounters(seq))
	if err != nil {
		return counters{}, err
	}
	return decodeCounters(v)
}

func readMessage(r pebble.Reader, seq uint64) (*push.Message, error) {
	v, err := getValue(r, kMsg(seq))
	if err != nil {
		return nil, err
	}
	return decodeMessage(v)
}

// lookup finds the Seq of message id in app.
func lookup(r pebble.Reader, app, id string) (uint64, error) {
	v, err := getValue(r, kMsgID(app, id))
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: message index", errCorrupt)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Message returns the message with id in app and its counters.
func (s *Store) Message(ctx context.Context, app, id string) (m push.Message, c store.Counters, err error) {
	err = s.read(ctx, func(r pebble.Reader) error {
		seq, err := lookup(r, app, id)
		if err != nil {
			return err
		}
		pm, err := readMessage(r, seq)
		if err != nil {
			return err
		}
		v, err := getValue(r, kCounters(seq))
		if err != nil {
			return err
		}
		sc, err := decodeCounters(v)
		if err != nil {
			return err
		}
		m = *pm
		c = store.Counters{Targeted: int(sc.targeted), Delivered: int(sc.delivered), Replaced: int(sc.replaced)}
		c.Relay, err = relayCounts(r, seq)
		return err
	})
	return m, c, err
}

// Recall marks a message recalled and retires it at once (rather than at
// the next Sweep): nothing of it is delivered from now on.
func (s *Store) Recall(ctx context.Context, app, id string) error {
	return s.write(ctx, func(w *writeTx) error {
		seq, err := lookup(w.b, app, id)
		if err != nil {
			return err
		}
		m, err := readMessage(w.b, seq)
		if err != nil || m.Recalled {
			return err
		}
		m.Recalled = true
		w.set(kMsg(seq), encodeMessage(m))
		w.unschedule(m)
		return w.retire(m)
	})
}

// Pending returns up to limit live messages for d in Seq order: a merge of
// its inbox entries and the app's fan-out messages newer than d.FirstSeq
// that match d and that d has not acknowledged. A message that is both in
// the inbox and matches the selector is returned once.
func (s *Store) Pending(ctx context.Context, d *push.Device, now time.Time, limit, maxBytes int) ([]push.Message, error) {
	if limit <= 0 {
		return nil, nil
	}
	out := make([]push.Message, 0, min(limit, 64))
	size := 0
	err := s.read(ctx, func(r pebble.Reader) error {
		inbox, err := newSeqIter(r, kInboxPrefix(d.ID), 0)
		if err != nil {
			return err
		}
		defer inbox.close()
		fan, err := newSeqIter(r, kFanoutPrefix(d.App), d.FirstSeq+1)
		if err != nil {
			return err
		}
		defer fan.close()
		if !inbox.ok && !fan.ok {
			// Nothing waits, the usual case when a device connects:
			// spare the two lookup iterators below.
			return errors.Join(inbox.err(), fan.err())
		}
		// Messages and acks are looked up in rising Seq order, so one
		// iterator per table seeking forward costs far less than a Get
		// (which builds an iterator) per lookup.
		msgs, err := newPointIter(r, key(tMsg))
		if err != nil {
			return err
		}
		defer msgs.close()
		acks, err := newPointIter(r, key(tAck))
		if err != nil {
			return err
		}
		defer acks.close()
		for len(out) < limit {
			seq, fromInbox, fromFan := uint64(0), inbox.ok, fan.ok
			switch {
			case !fromInbox && !fromFan:
				return errors.Join(inbox.err(), fan.err())
			case fromInbox && fromFan && inbox.seq != fan.seq:
				// Take the lower; the other waits for its turn.
				fromInbox, fromFan = inbox.seq < fan.seq, fan.seq < inbox.seq
			}
			if fromInbox {
				seq = inbox.seq
				inbox.next()
			}
			if fromFan {
				seq = fan.seq
				fan.next()
			}
			v, ok := msgs.get(kMsg(seq))
			if !ok {
				if err := msgs.err(); err != nil {
					return err
				}
				continue // an index row whose message was purged meanwhile
			}
			m, err := decodeMessage(v)
			if err != nil {
				return err
			}
			if m.App != d.App || !m.Live(now) {
				continue
			}
			if !fromInbox {
				if !m.ForOwn(d) {
					continue
				}
				if _, acked := acks.get(kAck(seq, d.ID)); acked {
					continue
				}
				if err := acks.err(); err != nil {
					return err
				}
			}
			out = append(out, *m)
			if size += m.Size(); maxBytes > 0 && size >= maxBytes {
				return nil
			}
		}
		return nil
	})
	return out, err
}

// pointIter looks keys of one table up through one iterator. It is
// cheapest when the keys come in rising order.
type pointIter struct {
	it     *pebble.Iterator
	valErr error // from the last get's value, which Error does not report
}

func newPointIter(r pebble.Reader, table []byte) (*pointIter, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: table, UpperBound: prefixEnd(table)})
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	return &pointIter{it: it}, nil
}

// get returns the value at k, valid until the next call, and whether k
// exists; on false, err tells an engine error from absence.
func (p *pointIter) get(k []byte) ([]byte, bool) {
	if !p.it.SeekGE(k) || !bytes.Equal(p.it.Key(), k) {
		return nil, false
	}
	v, err := p.it.ValueAndErr()
	if err != nil {
		p.valErr = err
		return nil, false
	}
	return v, true
}

func (p *pointIter) err() error {
	if p.valErr != nil {
		return fmt.Errorf("embedded: %w", p.valErr)
	}
	if err := p.it.Error(); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	return nil
}
func (p *pointIter) close() error { return p.it.Close() }

// seqIter walks keys that end in a Seq under one prefix, in Seq order.
type seqIter struct {
	it  *pebble.Iterator
	ok  bool
	seq uint64
}

func newSeqIter(r pebble.Reader, prefix []byte, from uint64) (*seqIter, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: u64(bytes.Clone(prefix), from), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	s := &seqIter{it: it}
	s.ok = it.First()
	if s.ok {
		s.seq = seqSuffix(it.Key())
	}
	return s, nil
}

func (s *seqIter) next() {
	s.ok = s.it.Next()
	if s.ok {
		s.seq = seqSuffix(s.it.Key())
	}
}

func (s *seqIter) err() error   { return s.it.Error() }
func (s *seqIter) close() error { return s.it.Close() }

// Ack records that d received the messages with ids. An inbox entry is
// deleted; a fan-out message meant for d gets an acknowledgement row; a
// message that reached d both ways gets both, and counts once.
func (s *Store) Ack(ctx context.Context, d *push.Device, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	var n int
	err := s.write(ctx, func(w *writeTx) error {
		n = 0
		seen := map[uint64]bool{}
		for _, id := range ids {
			seq, err := lookup(w.b, d.App, id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if seen[seq] {
				continue
			}
			seen[seq] = true
			m, err := readMessage(w.b, seq)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			inbox, err := w.has(kInbox(d.ID, seq))
			if err != nil {
				return err
			}
			// A message that reached d through its inbox and also matches
			// it as a selector gets the ack row too, or the fan-out side
			// would hand it over again.
			selected, acked := m.Fanout() && m.For(d), false
			if selected {
				if acked, err = w.has(kAck(seq, d.ID)); err != nil {
					return err
				}
			}
			if !inbox && (!selected || acked) {
				continue
			}
			c, err := w.counters(seq)
			if err != nil {
				return err
			}
			if inbox {
				w.del(kInbox(d.ID, seq))
			}
			if selected {
				w.set(kAck(seq, d.ID), nil)
			}
			c.delivered++
			w.set(kCounters(seq), encodeCounters(c))
			n++
		}
		return nil
	})
	return n, err
}
