package main

import (
	"fmt"
	"runtime/debug"
)

// version describes this binary from its build information: the module's
// version (a tag for `go install ...@v1.2.3`, "(devel)" for a build from a
// checkout), the commit and whether the tree had changes, and Go's version.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "herald (no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	commit, modified, when := "", false, ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		case "vcs.time":
			when = s.Value
		}
	}
	out := "herald " + v
	if commit != "" {
		if len(commit) > 12 {
			commit = commit[:12]
		}
		out += " commit " + commit
		if modified {
			out += " (modified)"
		}
		if when != "" {
			out += " " + when
		}
	}
	return fmt.Sprintf("%s %s", out, bi.GoVersion)
}
