package server

import (
	"context"
	"fmt"
	"github.com/heraldpush/herald/internal/metrics"
	"log/slog"

	"github.com/heraldpush/herald/internal/config"
	"github.com/heraldpush/herald/internal/store"
	"github.com/heraldpush/herald/internal/store/embedded"
	"github.com/heraldpush/herald/internal/store/postgres"
)

// openedStore is a store with what the server needs to know of it.
type openedStore struct {
	store.Store
	desc string // for the start-up banner
	// health reports why the store cannot take changes now, for /readyz;
	// nil when the store has no such check (a remote database answers
	// each call itself).
	health func() error
}

// openStore opens PostgreSQL when it is configured, else the embedded store
// in the data directory. Opening the embedded store may wait for the disk
// (a full disk makes its log replay wait); it gives up when ctx ends.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger, m *metrics.M) (openedStore, error) {
	if cfg.PostgresURL != "" {
		var opts []postgres.Option
		if cfg.PostgresSchema != "" {
			opts = append(opts, postgres.WithSchema(cfg.PostgresSchema))
		}
		st, err := postgres.Open(ctx, cfg.PostgresURL, opts...)
		if err != nil {
			return openedStore{}, fmt.Errorf("postgres store: %w", err)
		}
		return openedStore{Store: st, desc: "postgres"}, nil
	}
	args := []any{"dir", cfg.DataDir, "reserve", cfg.StoreMinFree}
	if free, err := embedded.DiskFree(cfg.DataDir); err == nil {
		args = append(args, "free", free)
		if cfg.StoreMinFree > 0 && free < uint64(cfg.StoreMinFree) {
			log.Warn("the data directory has less free space than the store's reserve: writes will be refused (503) until space is freed", args...)
		}
	}
	log.Info("opening the embedded store", args...)
	st, err := embedded.OpenContext(ctx, cfg.DataDir, embedded.Options{Logger: log, MinFree: cfg.StoreMinFree, Committed: m.Commit})
	if err != nil {
		return openedStore{}, fmt.Errorf("embedded store in %s: %w", cfg.DataDir, err)
	}
	return openedStore{Store: st, desc: "embedded (" + cfg.DataDir + ")", health: st.Health}, nil
}
