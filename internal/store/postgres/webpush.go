package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/internal/store"
)

const subCols = `id, token_hash, device_id, app, app_server_key, label, created_at, revoked_at`

func scanSub(row pgx.Row) (store.Subscription, error) {
	var s store.Subscription
	var revoked *time.Time
	if err := row.Scan(&s.ID, &s.TokenHash, &s.Device, &s.App, &s.AppServerKey, &s.Label, &s.CreatedAt, &revoked); err != nil {
		return store.Subscription{}, err
	}
	s.CreatedAt = s.CreatedAt.UTC()
	if revoked != nil {
		s.RevokedAt = revoked.UTC()
	}
	return s, nil
}

// CreateSubscription implements store.Store. Like CreateDevice, it inserts
// from a SELECT of the row it depends on: no row inserted means no device.
func (s *Store) CreateSubscription(ctx context.Context, sub store.Subscription) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(sub.TokenHash) == 0 {
		return fmt.Errorf("postgres: create subscription: no token hash")
	}
	var revoked *time.Time
	if sub.Revoked() {
		revoked = &sub.RevokedAt
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO webpush_subscriptions (id, token_hash, device_id, app, app_server_key, label, created_at, revoked_at)
		SELECT $1, $2, id, $4, $5, $6, $7, $8 FROM devices WHERE id = $3`,
		sub.ID, sub.TokenHash, sub.Device, sub.App, sub.AppServerKey, sub.Label, sub.CreatedAt, revoked)
	if err != nil {
		return s.wrap("create subscription", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: create subscription: device %q: %w", sub.Device, store.ErrNotFound)
	}
	return nil
}

// Subscription implements store.Store.
func (s *Store) Subscription(ctx context.Context, tokenHash []byte) (store.Subscription, error) {
	if err := s.check(); err != nil {
		return store.Subscription{}, err
	}
	sub, err := scanSub(s.pool.QueryRow(ctx, `SELECT `+subCols+` FROM webpush_subscriptions WHERE token_hash = $1`, tokenHash))
	if err != nil {
		return store.Subscription{}, s.wrap("subscription", err)
	}
	return sub, nil
}

// Subscriptions implements store.Store: live ones only, through the partial
// index of migration 0003, which holds no revoked row.
func (s *Store) Subscriptions(ctx context.Context, device string) ([]store.Subscription, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+subCols+` FROM webpush_subscriptions
		WHERE device_id = $1 AND revoked_at IS NULL ORDER BY id`, device)
	if err != nil {
		return nil, s.wrap("subscriptions", err)
	}
	subs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Subscription, error) { return scanSub(r) })
	return subs, s.wrap("subscriptions", err)
}

// RevokeSubscription implements store.Store. coalesce keeps the first
// revocation time, so that a second revocation is a no-op.
func (s *Store) RevokeSubscription(ctx context.Context, device, id string, at time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE webpush_subscriptions SET revoked_at = coalesce(revoked_at, $3)
		WHERE device_id = $1 AND id = $2`, device, id, at)
	if err != nil {
		return s.wrap("revoke subscription", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: revoke subscription %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// PurgeSubscriptions implements store.Store.
func (s *Store) PurgeSubscriptions(ctx context.Context, before time.Time) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM webpush_subscriptions WHERE revoked_at < $1`, before)
	if err != nil {
		return 0, s.wrap("purge subscriptions", err)
	}
	return int(tag.RowsAffected()), nil
}
