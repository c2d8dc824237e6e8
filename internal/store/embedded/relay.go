package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Relay jobs live in two tables: 'j', keyed by message and device, holds
// the job (so that a fan-out expansion that runs again finds the jobs it
// made, and a purge drops a message's jobs as one range), and 'J', keyed by
// due time, lists them in the order RelayDue wants. Both change in one
// write. Outcome counters ('o') are one row per channel, result and reason,
// so that a report reads a few rows however many devices a message reached.

func encodeJob(j *store.RelayJob) []byte {
	e := enc{recordV1}
	e.str(j.App)
	e.str(j.MsgID)
	e.str(string(j.Channel))
	e.time(j.Due)
	e.uvarint(uint64(j.Attempt))
	e.varint(int64(j.Wait))
	return e
}

func decodeJob(k, v []byte) (store.RelayJob, error) {
	if len(k) < 1+8 {
		return store.RelayJob{}, fmt.Errorf("%w: relay job key", errCorrupt)
	}
	d := dec{b: v}
	d.version()
	j := store.RelayJob{
		Seq: binary.BigEndian.Uint64(k[1:9]), Device: string(k[9:]),
		App: d.str(), MsgID: d.str(), Channel: push.ChannelKind(d.str()), Due: d.time(), Attempt: int(d.uvarint()),
		Wait: time.Duration(d.varint()),
	}
	return j, d.err
}

// putJob writes j, replacing the due row of the job it updates (old), if
// any.
func (w *writeTx) putJob(j *store.RelayJob, old *store.RelayJob) {
	if old != nil {
		w.del(kJobDue(old.Due, old.Seq, old.Device))
	}
	// The due row holds the job too, so that RelayDue reads one row a job.
	v := encodeJob(j)
	w.set(kJob(j.Seq, j.Device), v)
	k := kJobDue(j.Due, j.Seq, j.Device)
	w.set(k, v)
	w.s.relayHead.lower(k)
}

// relayHead is the due-index key RelayDue starts from: no live job sorts
// before it. Done jobs leave tombstones at the front of the due index,
// which an LSM engine makes every scan step over until they are
// compacted away; starting past them keeps a busy queue's reads in
// proportion to its live jobs. Every job written lowers the head to its
// key if need be (a write that then fails to commit lowers it for
// nothing, which is harmless); a scan raises it only if no job was
// written since the scan's snapshot (gen), as such a job may be missing
// from it.
type relayHead struct {
	mu  sync.Mutex
	key []byte // nil: the start of the index
	gen uint64 // counts lower calls
}

func (h *relayHead) lower(k []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen++
	if h.key != nil && bytes.Compare(k, h.key) < 0 {
		h.key = bytes.Clone(k)
	}
}

func (h *relayHead) start() ([]byte, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.key == nil {
		return key(tJobDue), h.gen
	}
	return h.key, h.gen
}

// raise moves the head to k, the first live key a scan from a snapshot
// taken at gen found, unless a job was written since.
func (h *relayHead) raise(k []byte, gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen == gen {
		h.key = bytes.Clone(k)
	}
}

// job reads the stored job with j's key, and whether there is one.
func (w *writeTx) job(j store.RelayJob) (store.RelayJob, bool, error) {
	k := kJob(j.Seq, j.Device)
	v, err := w.get(k)
	if errors.Is(err, store.ErrNotFound) {
		return store.RelayJob{}, false, nil
	}
	if err != nil {
		return store.RelayJob{}, false, err
	}
	old, err := decodeJob(k, v)
	return old, err == nil, err
}

// appendRelays writes the relay jobs of message m; append calls it.
func (w *writeTx) appendRelays(m *push.Message, jobs []store.RelayJob) {
	for i := range jobs {
		j := jobs[i]
		j.Seq, j.MsgID, j.App = m.Seq, m.ID, m.App
		w.putJob(&j, nil)
	}
}

// RelayDue implements store.Store.
func (s *Store) RelayDue(ctx context.Context, now time.Time, limit int) ([]store.RelayJob, time.Time, error) {
	var (
		out  []store.RelayJob
		next time.Time
	)
	from, gen := s.relayHead.start()
	var head []byte
	err := s.read(ctx, func(r pebble.Reader) error {
		out, next, head = nil, time.Time{}, prefixEnd(key(tJobDue))
		hi := u64(key(tJobDue), timeOrder(now.Add(time.Nanosecond)))
		return scanRange(r, from, prefixEnd(key(tJobDue)), func(k, v []byte) (bool, error) {
			if len(out) == 0 && bytes.Equal(head, prefixEnd(key(tJobDue))) {
				head = bytes.Clone(k) // the first row: every row before it is gone
			}
			if len(k) < 1+16 {
				return false, fmt.Errorf("%w: relay due key", errCorrupt)
			}
			if len(out) >= limit || bytes.Compare(k, hi) >= 0 {
				next = time.Unix(0, int64(binary.BigEndian.Uint64(k[1:9])^1<<63)).UTC()
				return false, nil
			}
			j, err := decodeJob(kJob(binary.BigEndian.Uint64(k[9:17]), string(k[17:])), v)
			if err != nil {
				return false, err
			}
			out = append(out, j)
			return true, nil
		})
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	s.relayHead.raise(head, gen)
	return out, next, nil
}

// RelayRetry implements store.Store.
func (s *Store) RelayRetry(ctx context.Context, job store.RelayJob, due time.Time) error {
	return s.write(ctx, func(w *writeTx) error {
		old, ok, err := w.job(job)
		if err != nil || !ok {
			return err
		}
		if old.Attempt == 0 && job.Attempt > 0 && job.Device != "" {
			if err := w.count(job.Seq, job.Channel, store.RelayWaiting, "", 1); err != nil {
				return err
			}
		}
		nj := old
		nj.Due, nj.Attempt, nj.Channel = due, job.Attempt, job.Channel
		w.putJob(&nj, &old)
		return nil
	})
}

// RelayDone implements store.Store. The counters of the ends are summed
// first: the jobs of one push share their message's counters, and each
// counter is read and written once per call rather than once per job.
func (s *Store) RelayDone(ctx context.Context, ends ...store.RelayEnd) error {
	type counter struct {
		seq            uint64
		ch             push.ChannelKind
		result, reason string
	}
	return s.writeUnsynced(ctx, func(w *writeTx) error {
		deltas := map[counter]int64{}
		live := map[uint64]bool{} // whether the message is still stored
		for _, e := range ends {
			old, ok, err := w.job(e.Job)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			w.del(kJob(old.Seq, old.Device))
			w.del(kJobDue(old.Due, old.Seq, old.Device))
			if old.Attempt > 0 && old.Device != "" {
				deltas[counter{old.Seq, old.Channel, store.RelayWaiting, ""}]--
			}
			if old.Device == "" || e.Outcome.Result == "" {
				continue
			}
			// A message purged meanwhile keeps no counters.
			stored, seen := live[old.Seq]
			if !seen {
				if stored, err = w.has(kMsg(old.Seq)); err != nil {
					return err
				}
				live[old.Seq] = stored
			}
			if stored {
				deltas[counter{old.Seq, e.Outcome.Channel, e.Outcome.Result, e.Outcome.Reason}]++
			}
		}
		for c, d := range deltas {
			if d == 0 {
				continue
			}
			if err := w.count(c.seq, c.ch, c.result, c.reason, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// count adds delta to one outcome counter of message seq.
func (w *writeTx) count(seq uint64, ch push.ChannelKind, result, reason string, delta int64) error {
	k := kOutcome(seq, string(ch), result, reason)
	v, err := w.get(k)
	var n int64
	switch {
	case err == nil:
		d := dec{b: v}
		n = d.varint()
		if d.err != nil {
			return d.err
		}
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	n += delta
	if n <= 0 {
		w.del(k)
		return nil
	}
	var e enc
	e.varint(n)
	w.set(k, e)
	return nil
}

// RelayExpand implements store.Store.
func (s *Store) RelayExpand(ctx context.Context, from store.RelayJob, jobs []store.RelayJob, last bool) error {
	return s.write(ctx, func(w *writeTx) error {
		old, ok, err := w.job(from)
		if err != nil || !ok {
			return err // expanded already
		}
		for i := range jobs {
			j := jobs[i]
			j.Seq, j.MsgID, j.App = old.Seq, old.MsgID, old.App
			if _, exists, err := w.job(j); err != nil {
				return err
			} else if exists {
				continue
			}
			w.putJob(&j, nil)
		}
		if last {
			w.del(kJob(old.Seq, old.Device))
			w.del(kJobDue(old.Due, old.Seq, old.Device))
		}
		return nil
	})
}

// relayCounts reads the outcome counters of message seq.
func relayCounts(r pebble.Reader, seq uint64) (map[push.ChannelKind]*store.RelayCounts, error) {
	var out map[push.ChannelKind]*store.RelayCounts
	p := kOutcomePrefix(seq)
	err := scan(r, p, func(k, v []byte) (bool, error) {
		d := dec{b: k[len(p):]}
		ch, result := push.ChannelKind(d.str()), d.str()
		reason := string(d.b)
		vd := dec{b: v}
		n := int(vd.varint())
		if d.err != nil || vd.err != nil {
			return false, errCorrupt
		}
		if out == nil {
			out = map[push.ChannelKind]*store.RelayCounts{}
		}
		c := out[ch]
		if c == nil {
			c = &store.RelayCounts{}
			out[ch] = c
		}
		c.Add(result, reason, n)
		return true, nil
	})
	return out, err
}

// purgeRelays deletes message seq's jobs and outcome counters.
func (w *writeTx) purgeRelays(seq uint64) error {
	var dues [][]byte
	err := scan(w.b, kJobPrefix(seq), func(k, v []byte) (bool, error) {
		j, err := decodeJob(k, v)
		if err != nil {
			return false, err
		}
		dues = append(dues, kJobDue(j.Due, j.Seq, j.Device))
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, k := range dues {
		w.del(k)
	}
	w.b.DeleteRange(kJobPrefix(seq), kJobPrefix(seq+1), nil)
	w.b.DeleteRange(kOutcomePrefix(seq), kOutcomePrefix(seq+1), nil)
	return nil
}

// Waits implements store.Store.
func (s *Store) Waits(ctx context.Context, d *push.Device, m *push.Message) (bool, error) {
	var waits bool
	err := s.readOne(ctx, func(r pebble.Reader) error {
		inbox, err := hasKey(r, kInbox(d.ID, m.Seq))
		if err != nil || inbox {
			waits = inbox
			return err
		}
		if !m.Fanout() || !m.For(d) {
			waits = false
			return nil
		}
		acked, err := hasKey(r, kAck(m.Seq, d.ID))
		waits = !acked
		return err
	})
	return waits, err
}

// DeactivateChannel implements store.Store.
func (s *Store) DeactivateChannel(ctx context.Context, id string, ch push.Channel, reason string, at time.Time) (bool, error) {
	var done bool
	err := s.write(ctx, func(w *writeTx) error {
		done = false
		d, err := readDevice(w.b, id)
		if err != nil {
			return err
		}
		if !d.Channel.SameAddress(&ch) || d.Channel.Inactive != "" {
			return nil
		}
		d.Channel.Inactive, d.Channel.InactiveAt = reason, at.UTC()
		w.set(kDevice(d.ID), encodeDevice(&d))
		done = true
		return nil
	})
	return done, err
}

// takeAddress makes d the holder of its channel's vendor address, taking it
// from another device of the app that held it, whose channel becomes
// Herald's own; and drops the index row of the address d held before (old,
// nil for a new device).
func (w *writeTx) takeAddress(d *push.Device, old *push.Device) error {
	if old != nil && old.Channel.Kind != push.ChannelHerald && old.Channel.Address() != "" && !old.Channel.SameAddress(&d.Channel) {
		w.del(kAddress(old.App, string(old.Channel.Kind), old.Channel.Address()))
	}
	if d.Channel.Kind == push.ChannelHerald || d.Channel.Address() == "" {
		return nil
	}
	k := kAddress(d.App, string(d.Channel.Kind), d.Channel.Address())
	v, err := w.get(k)
	switch {
	case err == nil && string(v) != d.ID:
		other, err := readDevice(w.b, string(v))
		if err == nil && other.Channel.SameAddress(&d.Channel) {
			other.Channel = push.Channel{Kind: push.ChannelHerald}
			w.set(kDevice(other.ID), encodeDevice(&other))
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	w.set(k, []byte(d.ID))
	return nil
}

// dropAddress removes d's address index row, if d holds it.
func (w *writeTx) dropAddress(d *push.Device) error {
	if d.Channel.Kind == push.ChannelHerald || d.Channel.Address() == "" {
		return nil
	}
	k := kAddress(d.App, string(d.Channel.Kind), d.Channel.Address())
	v, err := w.get(k)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if string(v) == d.ID {
		w.del(k)
	}
	return nil
}

// PutChannelConfig implements store.Store.
func (s *Store) PutChannelConfig(ctx context.Context, app, kind string, sealed []byte) error {
	return s.write(ctx, func(w *writeTx) error {
		if ok, err := w.has(kApp(app)); err != nil || !ok {
			return orErr(err, store.ErrNotFound)
		}
		w.set(kChanConf(app, kind), sealed)
		return nil
	})
}

// ChannelConfig implements store.Store.
func (s *Store) ChannelConfig(ctx context.Context, app, kind string) (v []byte, err error) {
	err = s.readOne(ctx, func(r pebble.Reader) error {
		v, err = getValue(r, kChanConf(app, kind))
		return err
	})
	return v, err
}

// DeleteChannelConfig implements store.Store.
func (s *Store) DeleteChannelConfig(ctx context.Context, app, kind string) error {
	return s.write(ctx, func(w *writeTx) error {
		if ok, err := w.has(kChanConf(app, kind)); err != nil || !ok {
			return orErr(err, store.ErrNotFound)
		}
		w.del(kChanConf(app, kind))
		return nil
	})
}

// Lead implements store.Store: the process that opened the store is the
// only one using it, so it always leads.
func (s *Store) Lead(ctx context.Context, name string) (<-chan struct{}, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return make(chan struct{}), func() {}, nil
}

// indexAddresses builds the vendor address index ('T') for the devices a
// store written before it holds, once: where two devices of an app hold
// one address, the one updated last keeps it and the others' channels
// become Herald's own, as if they had registered in that order.
func (s *Store) indexAddresses() error {
	if ok, err := hasKey(s.db, key(tAddrDone)); err != nil || ok {
		return err
	}
	best := map[string]*push.Device{}
	var losers []push.Device
	err := scan(s.db, key(tDevice), func(_, v []byte) (bool, error) {
		d, err := decodeDevice(v)
		if err != nil {
			return false, err
		}
		if d.Channel.Kind == push.ChannelHerald || d.Channel.Address() == "" {
			return true, nil
		}
		k := string(kAddress(d.App, string(d.Channel.Kind), d.Channel.Address()))
		cur := best[k]
		switch {
		case cur == nil:
			best[k] = &d
		case d.UpdatedAt.After(cur.UpdatedAt) || d.UpdatedAt.Equal(cur.UpdatedAt) && d.ID > cur.ID:
			losers = append(losers, *cur)
			best[k] = &d
		default:
			losers = append(losers, d)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	for k, d := range best {
		b.Set([]byte(k), []byte(d.ID), nil)
	}
	for _, d := range losers {
		d.Channel = push.Channel{Kind: push.ChannelHerald}
		b.Set(kDevice(d.ID), encodeDevice(&d), nil)
	}
	b.Set(key(tAddrDone), nil, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("embedded: indexing vendor addresses: %w", err)
	}
	return nil
}
