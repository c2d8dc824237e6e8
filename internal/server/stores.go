package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/heraldpush/herald/internal/config"
	"github.com/heraldpush/herald/internal/store"
	"github.com/heraldpush/herald/internal/store/embedded"
	"github.com/heraldpush/herald/internal/store/postgres"
)

// openStore opens PostgreSQL when it is configured, else the embedded store
// in the data directory. It returns a description for the start-up banner.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (store.Store, string, error) {
	if cfg.PostgresURL != "" {
		var opts []postgres.Option
		if cfg.PostgresSchema != "" {
			opts = append(opts, postgres.WithSchema(cfg.PostgresSchema))
		}
		st, err := postgres.Open(ctx, cfg.PostgresURL, opts...)
		if err != nil {
			return nil, "", fmt.Errorf("postgres store: %w", err)
		}
		return st, "postgres", nil
	}
	st, err := embedded.Open(cfg.DataDir)
	if err != nil {
		return nil, "", fmt.Errorf("embedded store in %s: %w", cfg.DataDir, err)
	}
	return st, "embedded (" + cfg.DataDir + ")", nil
}
