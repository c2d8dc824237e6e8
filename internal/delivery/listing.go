package delivery

import (
	"context"
	"errors"
	"slices"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Described is a message with its delivery report.
type Described struct {
	Msg    push.Message
	Report Report
}

// Describe returns app's message id with its report, as Report counts it.
func (s *Service) Describe(ctx context.Context, app, id string) (Described, error) {
	m, c, err := s.store.Message(ctx, app, id)
	if errors.Is(err, store.ErrNotFound) {
		return Described{}, ErrNotFound
	}
	if err != nil {
		return Described{}, err
	}
	out, err := s.describe(ctx, app, []store.Listed{{Msg: m, Counters: c}})
	if err != nil {
		return Described{}, err
	}
	return out[0], nil
}

// Recent returns up to limit of app's messages, newest first, those older
// than the message before when it is set, each with its report.
// ErrNotFound if before names no message of app (or one already purged).
func (s *Service) Recent(ctx context.Context, app, before string, limit int) ([]Described, error) {
	ls, err := s.store.ListMessages(ctx, app, before, limit)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return s.describe(ctx, app, ls)
}

// describe reports on ls. The fan-out messages among them are counted in
// one walk of the app's devices, not one each: a page of broadcasts costs
// what one report does.
func (s *Service) describe(ctx context.Context, app string, ls []store.Listed) ([]Described, error) {
	targeted := make([]int, len(ls))
	var fanout []int
	for i := range ls {
		targeted[i] = ls[i].Counters.Targeted
		if ls[i].Msg.Fanout() {
			fanout = append(fanout, i)
		}
	}
	if len(fanout) > 0 {
		err := s.store.EachDevice(ctx, app, func(d *push.Device) bool {
			for _, i := range fanout {
				m := &ls[i].Msg
				if m.For(d) && !slices.Contains(m.Audience.RegistrationIDs, d.ID) {
					targeted[i]++
				}
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]Described, len(ls))
	for i := range ls {
		out[i] = Described{Msg: ls[i].Msg, Report: s.reportOf(&ls[i].Msg, ls[i].Counters, targeted[i])}
	}
	return out, nil
}

// reportOf is m's report given its counters and the devices it was for.
func (s *Service) reportOf(m *push.Message, c store.Counters, targeted int) Report {
	r := Report{
		MsgID: m.ID, AcceptedAt: m.AcceptedAt, SendAt: m.SendAt, ExpiresAt: m.ExpiresAt,
		Targeted: targeted, Delivered: c.Delivered, Replaced: c.Replaced,
		Channels: channelReports(c),
	}
	rest := max(0, targeted-c.Delivered-c.Replaced)
	now := s.now()
	switch {
	case m.Recalled:
		r.State, r.Recalled = "recalled", rest
	case m.Replaced:
		r.State, r.Replaced = "replaced", r.Replaced+rest
	case m.Expired(now):
		r.State, r.Expired = "expired", rest
	case !m.Due(now):
		r.State, r.Pending = "scheduled", rest
	case rest == 0 && targeted > 0:
		r.State = "delivered"
	default:
		r.State, r.Pending = "pending", rest
	}
	return r
}
