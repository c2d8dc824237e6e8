package heraldtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresURL returns the test database's URL (HERALD_TEST_POSTGRES, or
// the local service's), skipping the test when it cannot be reached, and
// failing it instead under CI=true, where it must run.
func PostgresURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("HERALD_TEST_POSTGRES")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required under CI=true and is not reachable at %s: %v", url, err)
		}
		t.Skipf("PostgreSQL not reachable at %s (set HERALD_TEST_POSTGRES): %v", url, err)
	}
	conn.Close(ctx)
	return url
}

// PostgresSchema returns PostgresURL and a fresh schema for one test
// (--postgres-schema), dropped when the test ends.
func PostgresSchema(t testing.TB) (url, schema string) {
	t.Helper()
	url = PostgresURL(t)
	schema = fmt.Sprintf("herald_test_%d", rand.Uint64())
	t.Cleanup(func() {
		ctx := context.Background()
		if conn, err := pgx.Connect(ctx, url); err == nil {
			conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			conn.Close(ctx)
		}
	})
	return url, schema
}
