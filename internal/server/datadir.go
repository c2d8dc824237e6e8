package server

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/heraldpush/herald/internal/config"
	"github.com/heraldpush/herald/internal/store/embedded"
)

// ErrNotInitialised is returned by New when the data directory does not
// hold what an earlier start left there, and the start was not told to
// initialise it (config.Init): starting anyway would create a new default
// app with new credentials, and every device registered before would get
// 401.
var ErrNotInitialised = errors.New("server: data directory not initialised")

// Names in the data directory.
const (
	// markerFile is written once the data directory is initialised: its
	// store created, its default app and admin token kept. It tells a
	// directory whose store was lost from one never used.
	markerFile = "herald-marker"
	// tokenFile is where adminToken keeps a generated admin token.
	tokenFile = "admin-token"
)

// dataDir is what a start found in the data directory.
type dataDir struct {
	path   string
	marker bool // markerFile exists
	store  bool // an embedded store exists (always false with PostgreSQL)
	token  bool // tokenFile exists and is not empty
	// tokenKept: no admin token is configured, so the one the data
	// directory keeps is the node's.
	tokenKept bool
	// postgres: the store is in PostgreSQL, the directory holds the
	// admin token only.
	postgres bool
	// init: this start may create what is missing (config.Init, or a
	// default directory found empty).
	init bool
}

// tokenKept reports whether the admin token lives in the data directory
// rather than in the configuration.
func tokenKept(cfg config.Config) bool { return cfg.AdminToken == "" && cfg.AdminTokenFile == "" }

// inspectDataDir looks at the data directory before anything is created in
// it and refuses a start that would silently replace what was lost. The
// rule:
//
//   - Nothing of Herald's there (no marker, store or admin token; the
//     directory may be missing): initialised when it is the default
//     ./herald-data, so that the one-command quick start works, or with
//     --init; an explicit --data needs --init once, since a mistyped or
//     unmounted path looks just like this.
//   - Everything there: start.
//   - A store and its admin token but no marker (a directory of a version
//     before markers): start, and write the marker.
//   - Anything else (a marker without a store, a store without its admin
//     token, a token without a store): refused unless --init, with what is
//     missing and what --init would create.
//
// With PostgreSQL the store is the database; the directory keeps only the
// admin token, which refuseLostToken checks once the database is open.
func inspectDataDir(cfg config.Config, log *slog.Logger) (dataDir, error) {
	d := dataDir{path: cfg.DataDir, tokenKept: tokenKept(cfg), postgres: cfg.PostgresURL != "", init: cfg.Init}
	var err error
	if d.marker, err = exists(filepath.Join(d.path, markerFile)); err != nil {
		return d, err
	}
	if d.token, err = tokenPresent(filepath.Join(d.path, tokenFile)); err != nil {
		return d, err
	}
	if d.postgres {
		return d, nil
	}
	if d.store, err = embedded.Exists(d.path); err != nil {
		return d, fmt.Errorf("data directory: %w", err)
	}
	tokenOK := d.token || !d.tokenKept
	switch {
	case d.marker && d.store && tokenOK:
		if cfg.Init {
			log.Warn("--init given, but the data directory is initialised already: nothing to create; start without --init so that a lost store is noticed", "dir", d.path)
		}
		d.init = false
		return d, nil
	case !d.marker && d.store && tokenOK:
		log.Info("the data directory has a store but no marker (written since this version): adopting it", "dir", d.path)
		return d, nil
	case !d.marker && !d.store && !d.token:
		if isDefaultDir(d.path) || cfg.Init {
			d.init = true
			return d, nil
		}
		what := "is empty"
		if _, err := os.Stat(d.path); errors.Is(err, os.ErrNotExist) {
			what = "does not exist"
		}
		return d, fmt.Errorf("%w: %s %s. Herald creates a new store there (a new default app, master secret and admin token) only when told: "+
			"start once with --init to initialise it, or fix --data if this is not the directory the node used before", ErrNotInitialised, d.path, what)
	}
	if cfg.Init {
		log.Warn("--init: creating what is missing in the data directory", "dir", d.path, "missing", strings.Join(d.missing(), ", "))
		return d, nil
	}
	return d, fmt.Errorf("%w: %s has %s but not %s (was part of it deleted, or is this another node's directory?). "+
		"Restore what is missing from a backup, or start once with --init, which would %s",
		ErrNotInitialised, d.path, strings.Join(d.present(), " and "), strings.Join(d.missing(), " nor "), d.initWould())
}

func (d dataDir) present() []string {
	var out []string
	if d.marker {
		out = append(out, "the marker "+markerFile)
	}
	if d.store {
		out = append(out, "a store")
	}
	if d.token {
		out = append(out, "the admin token "+tokenFile)
	}
	return out
}

func (d dataDir) missing() []string {
	var out []string
	if !d.marker {
		out = append(out, "the marker "+markerFile)
	}
	if !d.store {
		out = append(out, "a store")
	}
	if !d.token && d.tokenKept {
		out = append(out, "the admin token "+tokenFile)
	}
	return out
}

// initWould says what --init would create in d.
func (d dataDir) initWould() string {
	var out []string
	if !d.store {
		out = append(out, "create a new, empty store with a new default app and master secret (every device registered before would have to register again)")
	}
	if !d.token && d.tokenKept {
		out = append(out, "generate a new admin token")
	}
	if d.store {
		out = append(out, "keep the store")
	}
	return strings.Join(out, " and ")
}

// refuseLostToken refuses a PostgreSQL start whose admin token should be
// in the data directory and is not, when the database was initialised
// before (its default app existed, so EnsureApp made no secret): the token
// every admin client holds would silently change.
func (s *Server) refuseLostToken(d dataDir) error {
	if !d.postgres || !d.tokenKept || d.token || s.info.AppSecret != "" {
		return nil
	}
	path := filepath.Join(d.path, tokenFile)
	if d.init {
		s.log.Warn("--init: generating a new admin token for a database that has apps", "file", path)
		return nil
	}
	return fmt.Errorf("%w: the database has apps, but the admin token an earlier start generated (%s) is missing. "+
		"Restore that file, give the token with --admin-token, or start once with --init to generate a new one", ErrNotInitialised, path)
}

// markDataDir writes the marker once the embedded store, its default app
// and the admin token are in place. It is written last: a start that dies
// before it leaves a store without a marker, which the next start adopts.
// The admin token is synced first, since the marker vouches for it: a
// token file written and not synced was lost when the file system failed
// soon after a first start, while the marker survived.
func (s *Server) markDataDir(d dataDir) error {
	if d.postgres || d.marker {
		return nil
	}
	if d.tokenKept {
		if err := syncFile(filepath.Join(d.path, tokenFile)); err != nil {
			return fmt.Errorf("admin token: %w", err)
		}
	}
	path := filepath.Join(d.path, markerFile)
	text := fmt.Sprintf("Herald data directory, initialised %s.\n"+
		"Herald refuses to start where this file and the store or the admin token beside it do not agree:\n"+
		"see \"Store faults\" in docs/operations.md. Do not delete it.\n",
		time.Now().UTC().Format(time.RFC3339))
	if err := writeDurably(path, []byte(text)); err != nil {
		return fmt.Errorf("data directory marker: %w", err)
	}
	return nil
}

// writeDurably writes a new file and syncs it and its directory, so that
// the marker never outlives, after a crash, what it vouches for.
func writeDurably(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// syncFile makes a file written earlier durable. Its directory entry is
// made durable by writeDurably's sync of the directory.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("data directory: %w", err)
}

// tokenPresent reports whether a usable token is kept at path; adminToken
// replaces an empty file as if it were missing.
func tokenPresent(path string) (bool, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return strings.TrimSpace(string(b)) != "", nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("admin token: %w", err)
}

// isDefaultDir reports whether dir is the default data directory.
func isDefaultDir(dir string) bool {
	return filepath.Clean(dir) == filepath.Clean(config.Default().DataDir)
}
