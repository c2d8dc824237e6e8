// Package postgres is the PostgreSQL implementation of store.Store, Herald's
// system of record in cluster mode: several Herald nodes share one database,
// so every method is correct under concurrent writers from several processes,
// not only from several goroutines.
//
// The schema is created and upgraded by embedded, numbered migrations
// (migrations/NNNN_name.sql) when Open is called; a session advisory lock
// makes that safe when several nodes start at once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/store"
)

// Interface guards.
var _ store.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// Advisory lock keys. The migration lock uses the one-bigint key space and is
// database-wide; the sweep lock uses the two-int4 key space (a separate one)
// with the schema's OID, so stores in different schemas do not contend; the
// vendor address locks use it too, in a class of their own (devices.go).
const (
	migrateLockKey   int64 = 0x48455241_4c443031 // "HERALD01"
	sweepLockClass   int32 = 0x48524c44          // "HRLD"
	addressLockClass int32 = 0x48524c41          // "HRLA"
)

// Store is a store.Store backed by PostgreSQL through a pgx connection pool.
type Store struct {
	pool     *pgxpool.Pool // immutable; never nil
	sweepKey int32         // the OID of the schema the tables live in; immutable
	closed   atomic.Bool

	// appends groups concurrent Appends into transactions, reads groups
	// concurrent device look-ups into queries (group.go). Immutable.
	appends *combiner[[]store.Accept, []store.Accepted]
	reads   *combiner[string, push.Device]
	apps    appCache
}

// Option configures Open.
type Option func(*options)

type options struct {
	schema   string
	maxConns int32
}

// WithSchema keeps Herald's tables in the named schema, creating it if need
// be, instead of the connection's default search_path. Tests use it to get a
// fresh, isolated store each; operators may use it to share a database.
func WithSchema(name string) Option { return func(o *options) { o.schema = name } }

// WithMaxConns sets the size of the connection pool (default: pgxpool's, or
// pool_max_conns in the URL).
func WithMaxConns(n int32) Option { return func(o *options) { o.maxConns = n } }

// Open connects to the PostgreSQL database at url (a postgres:// URL or a
// key=value DSN), applies any migrations it has not seen yet and returns the
// store. The caller must Close it.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse %q: %w", redact(url), err)
	}
	if o.maxConns > 0 {
		cfg.MaxConns = o.maxConns
	}
	params := cfg.ConnConfig.RuntimeParams
	if o.schema != "" {
		params["search_path"] = pgx.Identifier{o.schema}.Sanitize()
	}
	// Append promises durability when it returns. That holds only with
	// synchronous commit, so insist on it unless the URL says otherwise
	// (an operator's explicit trade-off).
	if _, ok := params["synchronous_commit"]; !ok {
		params["synchronous_commit"] = "on"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx, o.schema); err != nil {
		pool.Close()
		return nil, err
	}
	if err := pool.QueryRow(ctx, `SELECT oid::int FROM pg_namespace WHERE nspname = current_schema()`).Scan(&s.sweepKey); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: find schema: %w", err)
	}
	// A quarter of the pool writes groups and a quarter reads them, the
	// rest is for everything else. Fewer writers make larger groups, which
	// is what saves PostgreSQL's CPU; more than one lets a group start
	// while another waits for its commit's flush.
	n := max(1, int(cfg.MaxConns)/4)
	s.appends = &combiner[[]store.Accept, []store.Accepted]{name: "append", weight: appendRows, max: maxGroupRows, run: s.commitGroup}
	s.appends.start(n)
	s.reads = &combiner[string, push.Device]{name: "device", weight: func(string) int { return 1 }, max: maxGroupReads, run: s.readDevices}
	s.reads.start(n)
	return s, nil
}

// redact hides the password of a postgres:// URL or a key=value DSN in
// error messages.
func redact(url string) string {
	if i := strings.Index(url, "://"); i >= 0 {
		if at := strings.LastIndex(url, "@"); at > i {
			userinfo := url[i+3 : at]
			if c := strings.IndexByte(userinfo, ':'); c >= 0 {
				return url[:i+3] + userinfo[:c] + ":xxxxx" + url[at:]
			}
		}
		return url
	}
	fields := strings.Fields(url)
	for i, f := range fields {
		if strings.HasPrefix(f, "password=") {
			fields[i] = "password=xxxxx"
		}
	}
	return strings.Join(fields, " ")
}

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries { // ReadDir sorts by name, hence by version
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("postgres: migration %s is not named NNNN_name.sql", e.Name())
		}
		b, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	return ms, nil
}

// migrate applies the migrations the database has not recorded in
// schema_migrations, each in its own transaction. It holds a session advisory
// lock throughout, so that of several nodes starting at once one migrates and
// the others wait and then find nothing left to do.
func (s *Store) migrate(ctx context.Context, schema string) (err error) {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		c.Release()
		return fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	defer func() {
		// A session lock outlives a transaction: a connection whose unlock
		// failed must not go back to the pool still holding it.
		if _, uerr := c.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLockKey); uerr != nil {
			c.Hijack().Close(context.Background())
			return
		}
		c.Release()
	}()

	if schema != "" {
		if _, err := c.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("postgres: migrate: create schema: %w", err)
		}
	}
	if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	rows, _ := c.Query(ctx, `SELECT version FROM schema_migrations`)
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	// Versions this binary does not know (a newer node migrated first) are
	// left alone: migrations only add, so an older node keeps working during
	// a rolling upgrade.
	for _, m := range ms {
		if slices.Contains(applied, m.version) {
			continue
		}
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			// No arguments: the simple protocol, which runs every statement of the file.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: migration %s: %w", m.name, err)
		}
	}
	return nil
}

// Close waits for the Appends already queued to commit, then closes the
// pool, waiting for connections in use to be returned. Other methods return
// store.ErrClosed afterwards. Closing twice is harmless.
func (s *Store) Close() error {
	if !s.closed.Swap(true) {
		s.appends.stop()
		s.reads.stop()
		s.pool.Close()
	}
	return nil
}

// check returns store.ErrClosed once the store is closed.
func (s *Store) check() error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

// PostgreSQL error codes the store acts on.
const (
	uniqueViolation      = "23505"
	serializationFailure = "40001"
	deadlockDetected     = "40P01"
)

// maxAttempts bounds how often a transaction is tried when PostgreSQL keeps
// aborting it to break deadlocks.
const maxAttempts = 5

// inTx runs fn in a transaction. When PostgreSQL aborts the transaction to
// break a deadlock (two writers locking the same rows in different orders,
// say two Appends collapsing the same entries), it runs fn again: the
// transaction rolled back whole, so that is safe.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return retry(func() error { return pgx.BeginFunc(ctx, s.pool, fn) })
}

// vendorAddressIndex is the unique index that keeps a vendor address to one
// device per app (migration 0005).
const vendorAddressIndex = "devices_vendor_address"

// retry calls fn until it succeeds, fails for good, or has been tried
// maxAttempts times. Besides deadlocks, it retries a registration that lost
// a race for a vendor address: one that committed first holds it, so the
// unique index refused ours, and ours, run again, sees that device and
// takes the address from it. Registrations take the address's lock first
// (devices.go), so that race is with a writer that took none: a node older
// than migration 0005 during a rolling upgrade.
func retry(fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		var pgErr *pgconn.PgError
		if err == nil || attempt == maxAttempts || !errors.As(err, &pgErr) {
			return err
		}
		switch {
		case pgErr.Code == deadlockDetected, pgErr.Code == serializationFailure:
		case pgErr.Code == uniqueViolation && pgErr.ConstraintName == vendorAddressIndex:
		default:
			return err
		}
	}
}

// wrap turns a pgx error into one that callers can test with errors.Is:
// no rows becomes store.ErrNotFound, a unique violation store.ErrExists, and
// anything after Close (a closed pool) store.ErrClosed.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() {
		return fmt.Errorf("postgres: %s: %w", op, store.ErrClosed)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: %s: %w", op, store.ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		return fmt.Errorf("postgres: %s: %w (%s)", op, store.ErrExists, pgErr.ConstraintName)
	}
	if unreachable(err) {
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// unreachable reports whether err means PostgreSQL cannot be reached or is
// not serving (a connection refused, reset or closed; the server shutting
// down or starting), rather than that it refused the statement: the API
// then answers 503 store_unavailable, which a client retries.
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08 is "connection exception"; 57P01-57P03 are the
		// server's shutdown and start-up; 53300 too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" ||
			pgErr.Code == "57P03" || pgErr.Code == "53300"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
