package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
