package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{arg}, &out, &out); err != nil {
			t.Fatalf("herald %s: %v", arg, err)
		}
		line := strings.TrimSpace(out.String())
		if !strings.HasPrefix(line, "herald ") || !strings.HasSuffix(line, runtime.Version()) || strings.Contains(line, "\n") {
			t.Errorf("herald %s printed %q, want one line: herald, the version, the commit if known, %s", arg, line, runtime.Version())
		}
	}
}
