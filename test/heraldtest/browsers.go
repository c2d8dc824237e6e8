package heraldtest

import (
	"os"
	"os/exec"
	"testing"
)

// Chromium returns Chromium's path ($CHROMIUM, else chromium or
// chromium-browser on $PATH), or skips the test (fails it under CI=true)
// saying that what cannot run without it.
func Chromium(t testing.TB, what string) string {
	t.Helper()
	return Program(t, "CHROMIUM", "apt-get install -y chromium", what, "chromium", "chromium-browser")
}

// Firefox returns Firefox's path ($FIREFOX, else firefox-esr or firefox),
// as Chromium does.
func Firefox(t testing.TB, what string) string {
	t.Helper()
	return Program(t, "FIREFOX", "apt-get install -y firefox-esr", what, "firefox-esr", "firefox")
}

// Program returns the path in $env, else the first of names on $PATH; with
// none it skips the test, or fails it under CI=true, where every peer the
// tests need is installed (.ci/run), naming how to install it.
func Program(t testing.TB, env, install, what string, names ...string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := names[0] + " is not installed (" + install + ", or set " + env + "): " + what + " cannot run"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
