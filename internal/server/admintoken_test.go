package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldpush/herald/internal/config"
	"github.com/heraldpush/herald/internal/push"
)

func TestTokenBits(t *testing.T) {
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	for _, tc := range []struct {
		name, token string
		ok          bool
	}{
		{"openssl rand -hex 16", hex.EncodeToString(random(16)), true},
		{"openssl rand -hex 15", hex.EncodeToString(random(15)), false},
		{"openssl rand -base64 16", base64.StdEncoding.EncodeToString(random(16)), true},
		{"base64url of 16 bytes, unpadded", base64.RawURLEncoding.EncodeToString(random(16)), true},
		{"base64 of 15 bytes", base64.StdEncoding.EncodeToString(random(15)), false},
		{"a generated secret", push.NewSecret(), true},
		{"secret123", "secret123", false},
		{"a word repeated", strings.Repeat("secret", 6), false},
		{"one character", strings.Repeat("a", 100), false},
		{"padding alone", strings.Repeat("=", 40), false},
		{"39 decimal digits", "123456789012345678901234567890123456789", true},
		{"38 decimal digits", "12345678901234567890123456789012345678", false},
		{"20 printable characters", "Tr0ub4dor&3!xq;Zp@w%", true},
	} {
		if got := checkAdminToken(tc.token, "test") == nil; got != tc.ok {
			t.Errorf("%s (%q, about %.0f bits): accepted %v, want %v", tc.name, tc.token, tokenBits(tc.token), got, tc.ok)
		}
	}
	// Random tokens made as the documentation says always pass, whatever
	// characters they happen to draw.
	for range 2000 {
		for _, tok := range []string{hex.EncodeToString(random(16)), base64.StdEncoding.EncodeToString(random(16))} {
			if err := checkAdminToken(tok, "test"); err != nil {
				t.Fatalf("%q: %v", tok, err)
			}
		}
	}
	if err := checkAdminToken("0123456789abcdef 0123456789abcdef", "test"); err == nil {
		t.Error("a token with a space was accepted")
	}
}

// startWithLog builds a node from cfg with its log kept; a node that
// started is run and stopped at the end of the test.
func startWithLog(t *testing.T, cfg config.Config) (*node, string, error) {
	t.Helper()
	var buf bytes.Buffer
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		return nil, buf.String(), err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &node{t: t, srv: srv, url: srv.Info().HTTPURL, info: srv.Info()}, buf.String(), nil
}

// TestAdminTokenRefusedWhenWeak: a weak token from any source stops the
// start, says how to make a good one, and creates no default app.
func TestAdminTokenRefusedWhenWeak(t *testing.T) {
	cfg := testConfig(t)
	cfg.AdminToken = "secret123"
	_, _, err := startWithLog(t, cfg)
	if !errors.Is(err, ErrAdminToken) || !strings.Contains(err.Error(), "openssl rand -hex 16") {
		t.Fatalf("New with a weak admin token: %v, want ErrAdminToken saying how to make one", err)
	}
	cfg.AdminToken = ""
	n, _, err := startWithLog(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.info.AppSecret == "" {
		t.Error("the refused start had created the default app: its master secret was never shown")
	}

	// A token kept in the data directory is held to the same rule.
	stored := testConfig(t)
	os.WriteFile(filepath.Join(stored.DataDir, "admin-token"), []byte("hunter2\n"), 0o600)
	if _, _, err := startWithLog(t, stored); !errors.Is(err, ErrAdminToken) {
		t.Errorf("a weak token in the data directory: %v, want ErrAdminToken", err)
	}
}

// TestAdminTokenFile: --admin-token-file gives the token without its
// newline; a file others may read works with a warning; an empty or
// missing file, or a file and a flag at once, stop the start.
func TestAdminTokenFile(t *testing.T) {
	token := hex.EncodeToString([]byte("herald test key!"))
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte(token+"\r\n"), 0o600)
	cfg := testConfig(t)
	cfg.AdminTokenFile = path
	n, log, err := startWithLog(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log, "level=WARN") {
		t.Errorf("a private token file was warned about: %s", log)
	}
	admin := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	if status, code := n.call("POST", "/v1/apps", admin, map[string]string{"name": "filed"}, nil); status != http.StatusCreated {
		t.Errorf("admin call with the token from the file: %d %s", status, code)
	}
	if n.info.AdminTokenFile != "" || n.info.AdminTokenNew {
		t.Errorf("Info says the token was generated or kept in %q", n.info.AdminTokenFile)
	}

	os.Chmod(path, 0o640)
	cfg = testConfig(t)
	cfg.AdminTokenFile = path
	if _, log, err := startWithLog(t, cfg); err != nil || !strings.Contains(log, "chmod 600") {
		t.Errorf("a group-readable token file: %v, log %q; want a start with a warning", err, log)
	}

	for name, content := range map[string]string{"empty": "", "newline alone": "\n"} {
		os.WriteFile(path, []byte(content), 0o600)
		cfg := testConfig(t)
		cfg.AdminTokenFile = path
		if _, _, err := startWithLog(t, cfg); !errors.Is(err, ErrAdminToken) {
			t.Errorf("%s token file: %v, want ErrAdminToken", name, err)
		}
	}
	cfg = testConfig(t)
	cfg.AdminTokenFile = filepath.Join(t.TempDir(), "missing")
	if _, _, err := startWithLog(t, cfg); !errors.Is(err, ErrAdminToken) {
		t.Errorf("missing token file: %v, want ErrAdminToken", err)
	}
	cfg = testConfig(t)
	cfg.AdminTokenFile, cfg.AdminToken = path, token
	if _, _, err := startWithLog(t, cfg); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("a token file and a token: %v, want a config error", err)
	}
}
