package postgres

// Placeholder until the PostgreSQL relay store lands (branch pgrelay).

import (
	"context"
	"errors"
	"time"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

var errNoRelay = errors.New("postgres: relay not implemented yet")

func (s *Store) RelayDue(context.Context, time.Time, int) ([]store.RelayJob, time.Time, error) {
	return nil, time.Time{}, nil
}
func (s *Store) RelayRetry(context.Context, store.RelayJob, time.Time) error { return errNoRelay }
func (s *Store) RelayDone(context.Context, store.RelayJob, store.RelayOutcome) error {
	return errNoRelay
}
func (s *Store) RelayExpand(context.Context, store.RelayJob, []store.RelayJob, bool) error {
	return errNoRelay
}
func (s *Store) Waits(context.Context, *push.Device, *push.Message) (bool, error) {
	return false, errNoRelay
}
func (s *Store) DeactivateChannel(context.Context, string, push.Channel, string, time.Time) (bool, error) {
	return false, errNoRelay
}
func (s *Store) PutChannelConfig(context.Context, string, string, []byte) error { return errNoRelay }
func (s *Store) ChannelConfig(context.Context, string, string) ([]byte, error) {
	return nil, store.ErrNotFound
}
func (s *Store) DeleteChannelConfig(context.Context, string, string) error { return store.ErrNotFound }
