package delivery

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// maxKeptAcks bounds the acknowledgements kept for retry; past it one is
// dropped, which costs only a redelivery of its message.
const maxKeptAcks = 100_000

// Pauses between retries of kept acknowledgements.
const (
	firstAckRetry = 100 * time.Millisecond
	maxAckRetry   = 2 * time.Second
)

// keptAcks holds acknowledgements the store could not record because it
// was unavailable (a full disk, a removed directory), until it can. They
// count as acknowledged meanwhile: the device's window frees as for a
// recorded ack, and Pending leaves them out, so they are not sent again.
// Without them the window of a device that acknowledged during the fault
// stayed full, and the device received nothing more, even what was
// accepted before the fault, until it reconnected; freeing the window
// without leaving them out would send the same messages again at every
// read of the inbox.
type keptAcks struct {
	count atomic.Int64 // mirrors n, so that Pending skips the lock while none is kept

	mu   sync.Mutex
	devs map[string]*keptAck // by device ID; guarded by mu
	n    int                 // IDs held; guarded by mu
	wake chan struct{}       // one buffered: retryAcks has work
}

type keptAck struct {
	dev *push.Device
	ids map[string]struct{}
}

// keepAck keeps d's ids for retryAcks.
func (s *Service) keepAck(d *push.Device, ids []string) {
	k := &s.kept
	k.mu.Lock()
	if k.devs == nil {
		k.devs = make(map[string]*keptAck)
	}
	a := k.devs[d.ID]
	if a == nil {
		a = &keptAck{dev: d, ids: make(map[string]struct{}, len(ids))}
		k.devs[d.ID] = a
	}
	for _, id := range ids {
		if _, ok := a.ids[id]; !ok && k.n < maxKeptAcks {
			a.ids[id] = struct{}{}
			k.n++
		}
	}
	k.count.Store(int64(k.n))
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// all returns a copy of every kept ack.
func (k *keptAcks) all() []keptAck {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]keptAck, 0, len(k.devs))
	for _, a := range k.devs {
		out = append(out, keptAck{dev: a.dev, ids: maps.Clone(a.ids)})
	}
	return out
}

// of returns the IDs kept for device dev, nil when none.
func (k *keptAcks) of(dev string) map[string]struct{} {
	if k.count.Load() == 0 {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if a := k.devs[dev]; a != nil {
		return maps.Clone(a.ids)
	}
	return nil
}

// forget drops dev's ids once the store recorded them.
func (k *keptAcks) forget(dev string, ids []string) {
	if k.count.Load() == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	a := k.devs[dev]
	if a == nil {
		return
	}
	for _, id := range ids {
		if _, ok := a.ids[id]; ok {
			delete(a.ids, id)
			k.n--
		}
	}
	if len(a.ids) == 0 {
		delete(k.devs, dev)
	}
	k.count.Store(int64(k.n))
}

// dropKept returns msgs without those in kept, at most limit.
func dropKept(msgs []push.Message, kept map[string]struct{}, limit int) []push.Message {
	out := msgs[:0]
	for _, m := range msgs {
		if _, ok := kept[m.ID]; !ok && len(out) < limit {
			out = append(out, m)
		}
	}
	return out
}

// retryAcks records kept acknowledgements once the store takes them,
// pausing longer while it does not. It returns when the service stops;
// acks still kept then are lost, which costs redeliveries.
func (s *Service) retryAcks() {
	pause := firstAckRetry
	for {
		select {
		case <-s.done:
			return
		case <-s.kept.wake:
		}
		for kept := s.kept.all(); len(kept) > 0; kept = s.kept.all() {
			unavailable := false
			for _, a := range kept {
				ids := slices.Collect(maps.Keys(a.ids))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := s.Ack(ctx, a.dev, ids)
				cancel()
				switch {
				case errors.Is(err, store.ErrUnavailable):
					unavailable = true
				case err != nil:
					s.kept.forget(a.dev.ID, ids)
					s.log.Warn("a kept acknowledgement failed; its messages will be sent again", "device", a.dev.ID, "err", err)
				}
			}
			if !unavailable {
				pause = firstAckRetry
				continue
			}
			select {
			case <-s.done:
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, maxAckRetry)
		}
	}
}
