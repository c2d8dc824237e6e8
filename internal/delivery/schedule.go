package delivery

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Scheduled messages (send_at) live in the store, not here: Append records
// each in the store's schedule in the same write as the message, and this
// node keeps one timer, for the earliest due time it knows of. When it
// fires, the scheduler asks the store what is due (store.Store.Due), loads
// those messages one page at a time, hands them to the dispatcher as an
// accepted push would be, marks them fired, and arms the timer for the next
// one. Waiting for any number of scheduled messages costs one timer; at
// start, Run asks the store first, so a restart forgets nothing and a
// message that fell due while the node was down is routed at once.
//
// Nodes sharing a store fire scheduled messages on one node at a time (the
// "schedule" lease, see Service.lead), which also looks at the store every
// Options.SharedPoll for messages the others accepted: in a cluster a
// scheduled message is routed up to that late.
//
// Routing then marking is at least once: a crash in between offers the page
// again after the restart, which the devices' de-duplication by ID absorbs;
// the other order would leave connected devices waiting for a reconnect.

const (
	// schedPage is how many due messages the scheduler takes from the store
	// at once: at most that many bodies are loaded at a time, besides the
	// dispatcher's queue.
	schedPage = 64
	// schedRetryMin and schedRetryMax bound the back-off after the store
	// failed to list or mark scheduled messages.
	schedRetryMin = time.Second
	schedRetryMax = time.Minute
	// zeroTTLGrace is how late a message with a TTL of 0 may still be
	// offered. It is for the devices connected at its due time; fired later
	// than this (the node was down, the store failing), that moment passed.
	zeroTTLGrace = 5 * time.Second
)

// scheduler is the service's one timer for scheduled messages.
//
// at is the invariant that keeps a message from being missed: it is
// cleared before the scheduler reads the store, and armAt only ever moves
// the timer earlier than at. A message committed before the read is in
// what the store returns; one committed after it is routed (and arms) after
// at was cleared, so neither the read's answer nor a later arm overrides it.
type scheduler struct {
	timer *time.Timer // set by New, stopped until armed; its channel wakes Service.schedule

	mu      sync.Mutex
	at      time.Time // when timer fires; zero while reading the store or idle; guarded by mu
	stopped bool      // guarded by mu
}

func newStoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// armAt makes the scheduler look at the store at t, unless it will sooner.
func (s *Service) armAt(t time.Time) {
	sc := &s.sched
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.stopped || (!sc.at.IsZero() && !t.Before(sc.at)) {
		return
	}
	sc.at = t
	sc.timer.Reset(t.Sub(s.now()))
}

func (sc *scheduler) clear() {
	sc.mu.Lock()
	sc.at = time.Time{}
	sc.mu.Unlock()
}

func (sc *scheduler) stop() {
	sc.mu.Lock()
	sc.stopped = true
	sc.timer.Stop()
	sc.mu.Unlock()
}

// schedule fires scheduled messages as they fall due, until ctx ends.
func (s *Service) schedule(ctx context.Context) {
	var (
		backoff  time.Duration
		unmarked []store.Scheduled // routed, not yet marked fired
		poll     <-chan time.Time  // nil on a store of this node's alone
	)
	if s.sharedPoll > 0 {
		// Other nodes accept scheduled messages too, and arm only their
		// own timers.
		t := time.NewTicker(s.sharedPoll)
		defer t.Stop()
		poll = t.C
	}
	for {
		s.sched.clear()
		next, err := s.fire(ctx, &unmarked)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, schedRetryMin), schedRetryMax)
			s.log.Error("scheduled messages: store failed; trying again", "err", err, "in", backoff)
			next = s.now().Add(backoff)
		} else {
			backoff = 0
		}
		if !next.IsZero() {
			s.armAt(next)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.sched.timer.C:
		case <-poll:
		}
	}
}

// fire routes every scheduled message due now, a page at a time, and
// returns when the next one is due (zero: none scheduled). unmarked carries
// a page that was routed but could not be marked fired, so that a failing
// store does not have it offered again on every retry.
func (s *Service) fire(ctx context.Context, unmarked *[]store.Scheduled) (time.Time, error) {
	var next time.Time
	for done := false; ; {
		if len(*unmarked) > 0 {
			if err := s.store.Fired(ctx, *unmarked); err != nil {
				return time.Time{}, err
			}
			*unmarked = nil
		}
		if done {
			return next, nil
		}
		now := s.now()
		due, n, err := s.store.Due(ctx, now, schedPage)
		if err != nil {
			return time.Time{}, err
		}
		for i, sc := range due {
			if err := s.wake(ctx, sc, now); err != nil {
				*unmarked = due[:i]
				return time.Time{}, err
			}
		}
		*unmarked, next = due, n
		done = next.IsZero() || next.After(now) // else the page was full: more are due
	}
}

// wake loads one due message and hands it to the dispatcher, unless it can
// no longer reach anyone.
func (s *Service) wake(ctx context.Context, sc store.Scheduled, now time.Time) error {
	if !sc.Fanout && len(sc.Targets) == 0 {
		return nil // every target acknowledged, was replaced or deleted
	}
	m, _, err := s.store.Message(ctx, sc.App, sc.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // purged meanwhile
	}
	if err != nil {
		return err
	}
	if !routable(&m, now) {
		return nil
	}
	select {
	case s.routes <- routed{m: &m, targets: sc.Targets}:
		return nil
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// routable reports whether a scheduled message fired at now still goes to
// live sessions.
func routable(m *push.Message, now time.Time) bool {
	switch {
	case m.Recalled || m.Replaced:
		return false
	case m.TTL == 0:
		return now.Sub(m.SendAt) < zeroTTLGrace
	default:
		return !m.Expired(now)
	}
}
