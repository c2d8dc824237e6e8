package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/heraldpush/herald/internal/config"
)

// A setting named twice in the config file is refused, spelled the same or
// with an underscore: the map's order would pick the value.
func TestConfigFileDuplicateSetting(t *testing.T) {
	for _, body := range []string{`{"max-body":"1","max-body":"2"}`, `{"max-body":"1","max_body":"2"}`} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.String("max-body", "", "")
		fs.String("config", "", "")
		file := filepath.Join(t.TempDir(), "herald.json")
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		err := applySources(fs, file)
		if err == nil || !strings.Contains(err.Error(), "max") {
			t.Errorf("config %s: %v, want an error naming the setting", body, err)
		}
	}
}

// A config file's numbers go through as written, however large; a
// duration without its unit, and any other bad value, is refused naming
// the setting, the value and what it takes.
func TestConfigFileValues(t *testing.T) {
	write := func(body string) string {
		file := filepath.Join(t.TempDir(), "herald.json")
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	cfg := config.Default()
	fs, _ := serveFlags(&cfg, io.Discard)
	if err := applySources(fs, write(`{"max-body": 8388608, "log-level": "debug", "init": true, "app-push-rate": 2.5}`)); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxBody != 8388608 || cfg.LogLevel != "debug" || !cfg.Init || cfg.AppPushRate != 2.5 {
		t.Errorf("settings read as %d %q %v %v", cfg.MaxBody, cfg.LogLevel, cfg.Init, cfg.AppPushRate)
	}
	for body, want := range map[string]string{
		`{"sweep-interval": 30}`:    `sweep-interval: "30" is not a duration with its unit`,
		`{"max-body": "lots"}`:      `max-body: "lots" is not a whole number`,
		`{"init": "yes"}`:           `init: "yes" is not true or false`,
		`{"max-body": [1]}`:         `max-body: [1] is not a string, a number or true/false`,
		`{"app-push-rate": "fast"}`: `app-push-rate: "fast" is not a number`,
		`{"max-body": 1.5}`:         `max-body: "1.5" is not a whole number`,
	} {
		cfg := config.Default()
		fs, _ := serveFlags(&cfg, io.Discard)
		err := applySources(fs, write(body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %s: %v, want %q", body, err, want)
		}
	}
}

// docs/herald.example.json holds every setting of herald serve at its
// default, and loads as a config file. Regenerate it with
// HERALD_UPDATE_EXAMPLE=1 go test ./cmd/herald -run TestExampleConfig.
func TestExampleConfig(t *testing.T) {
	want, err := exampleConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "docs", "herald.example.json")
	if os.Getenv("HERALD_UPDATE_EXAMPLE") == "1" {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s is not what config.Default() and the flags give (%v): run HERALD_UPDATE_EXAMPLE=1 go test ./cmd/herald -run TestExampleConfig", path, err)
	}
	cfg := config.Default()
	fs, _ := serveFlags(&cfg, io.Discard)
	if err := applySources(fs, path); err != nil {
		t.Fatalf("the example does not load: %v", err)
	}
	if def := config.Default(); !reflect.DeepEqual(cfg, def) {
		t.Error("loading the example changes a setting from its default")
	}
}
