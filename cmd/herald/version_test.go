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

func TestSendSummary(t *testing.T) {
	for _, c := range []struct {
		out    map[string]any
		fanout bool
		want   string
	}{
		{map[string]any{"msg_id": "m_1", "targeted": 1.0}, false, "accepted m_1: 1 device (herald report m_1)"},
		{map[string]any{"msg_id": "m_2", "targeted": 3.0, "unknown": []any{"x"}}, false, "accepted m_2: 3 devices; 1 names matched no device (herald report m_2)"},
		{map[string]any{"msg_id": "m_3", "targeted": 0.0}, true, "accepted m_3: every matching device, as it connects or polls (herald report m_3)"},
		{map[string]any{"msg_id": "m_4", "targeted": 1.0, "duplicate": true}, false, "accepted m_4 (a retry of an earlier push with the same idempotency key: not sent again): 1 device (herald report m_4)"},
	} {
		if got := sendSummary(c.out, c.fanout); got != c.want {
			t.Errorf("sendSummary(%v) = %q, want %q", c.out, got, c.want)
		}
	}
}
