package delivery

import (
	"context"
	"errors"
	"sync"
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
// was unavailable (a full disk), until it can. A device that acknowledged
// has the message: its stream keeps the message in its window meanwhile,
// so that nothing is sent past the window, and frees it when the retry
// succeeds. Without the retry the window of a device that acknowledged
// during the fault stayed full, and the device received nothing more until
// it reconnected; freeing the window without recording the ack would send
// the same messages again as soon as the inbox is read.
type keptAcks struct {
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
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// take returns every kept ack and forgets them.
func (k *keptAcks) take() []*keptAck {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*keptAck, 0, len(k.devs))
	for _, a := range k.devs {
		out = append(out, a)
	}
	k.devs, k.n = nil, 0
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
		for kept := s.kept.take(); len(kept) > 0; kept = s.kept.take() {
			unavailable := false
			for _, a := range kept {
				ids := make([]string, 0, len(a.ids))
				for id := range a.ids {
					ids = append(ids, id)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := s.Ack(ctx, a.dev, ids) // keeps them again if it fails so
				cancel()
				switch {
				case errors.Is(err, store.ErrUnavailable):
					unavailable = true
				case err != nil:
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
