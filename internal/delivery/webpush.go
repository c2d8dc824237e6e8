package delivery

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// PushMessage accepts a message its caller built itself rather than from a
// push.Request: the Web Push endpoint (RFC 8030) builds one from HTTP
// headers and an opaque body, which push.Request cannot express. m carries
// App, Audience, Data, TTL, Priority and CollapseID; PushMessage sets its ID
// (when empty), its times and its Seq, and lowers its TTL to the limit.
// targets are m's explicit targets, resolved and checked to belong to m.App
// by the caller. It returns once m is durable, then routes it like any push.
func (s *Service) PushMessage(ctx context.Context, m *push.Message, targets []string) error {
	now := s.now().UTC()
	if m.ID == "" {
		m.ID = push.NewMessageID()
	}
	m.TTL = max(m.TTL, 0)
	if s.limits.MaxTTL > 0 {
		m.TTL = min(m.TTL, s.limits.MaxTTL)
	}
	if m.Priority == "" {
		m.Priority = push.PriorityNormal
	}
	m.AcceptedAt, m.SendAt, m.ExpiresAt = now, now, now.Add(m.TTL)
	accepted, err := s.store.Append(ctx, []store.Accept{{Msg: m, Targets: targets}})
	if err != nil {
		return fmt.Errorf("delivery: store: %w", err)
	}
	m.Seq = accepted[0].Seq
	s.route(m, targets)
	return nil
}

// Message returns app's message id as stored, so that a caller can check
// what it is before acting on it (the Web Push endpoint recalls only its
// own subscription's messages). ErrNotFound if there is none.
func (s *Service) Message(ctx context.Context, app, id string) (push.Message, error) {
	m, _, err := s.store.Message(ctx, app, id)
	if errors.Is(err, store.ErrNotFound) {
		return push.Message{}, ErrNotFound
	}
	return m, err
}
