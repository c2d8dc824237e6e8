// Package archtest checks the dependency rule of docs/architecture.md: it
// lists every package's imports with `go list` and fails on a forbidden one,
// naming the rule and why it exists.
package archtest

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/heraldpush/herald"

type pkg struct {
	ImportPath string
	Imports    []string // direct, non-test
	Deps       []string // transitive, non-test
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages: the test is not looking at the module", len(pkgs))
	}
	return pkgs
}

// rel strips the module path: "internal/push".
func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

func under(path, prefix string) bool { return path == prefix || strings.HasPrefix(path, prefix+"/") }

// rule forbids packages matching from to import packages matching to.
type rule struct {
	name   string
	from   func(string) bool
	to     func(string) bool
	deps   bool // check transitive imports, not only direct ones
	reason string
}

func is(prefixes ...string) func(string) bool {
	return func(p string) bool {
		for _, pre := range prefixes {
			if under(p, pre) {
				return true
			}
		}
		return false
	}
}

func not(f func(string) bool) func(string) bool { return func(p string) bool { return !f(p) } }

var (
	leaves = is("internal/push", "internal/config", "internal/apierr", "internal/gateway/mqtt/packet", "internal/netpoll", "internal/netlimit", "web", "internal/strictjson", "internal/metrics")
	// base is what leaves may import: the strict JSON decoder, which both
	// push and apierr need and which imports nothing internal itself.
	base      = is("internal/strictjson")
	backends  = is("internal/store/embedded", "internal/store/postgres", "internal/router/nats", "internal/relay/apns", "internal/relay/fcm", "internal/relay/webpush")
	edges     = []string{"internal/api", "internal/gateway", "internal/console"}
	core      = is("internal/delivery", "internal/registry", "internal/session", "internal/router", "internal/store", "internal/relay", "internal/webpush")
	internals = is("internal")
)

var rules = []rule{
	{
		name: "client imports nothing internal", from: is("client"), to: internals, deps: true,
		reason: "client/ is what users import; it must build from the public wire contract alone",
	},
	{
		name: "leaves import nothing internal", from: leaves, to: func(p string) bool { return internals(p) && !base(p) },
		reason: "push, config, apierr, the MQTT codec and the embedded web assets are shared by everyone; an internal import there makes a cycle waiting to happen (strictjson, below them all, is the one exception)",
	},
	{
		name: "the base imports nothing internal", from: base, to: internals,
		reason: "strictjson is imported by the leaves, so it must import nothing internal at all",
	},
	{
		name: "only the composition root knows the backends", from: not(is("internal/server", "internal/store/storetest")), to: backends,
		reason: "everyone else gets stores, routers and relays as interfaces, so that backends can be swapped and tested alone",
	},
	{
		name: "the core does not import the edges", from: core, to: is(append(edges, "internal/server", "cmd")...),
		reason: "delivery and its collaborators serve every transport; they must not know any of them",
	},
	{
		name: "nothing imports the composition root", from: not(is("cmd/herald")), to: is("internal/server", "cmd"),
		reason: "server wires everything together; importing it from below makes a cycle",
	},
	{
		name: "the load tool is a black box", from: is("internal/bench"), to: not(is("client", "internal/gateway/mqtt/packet")),
		reason: "herald bench must measure Herald as any client would, through its wire protocols, so it imports only the public client and the MQTT codec",
	},
	{
		name: "nothing ships the test suite", from: not(is("internal/store/storetest")), to: is("internal/store/storetest"),
		reason: "storetest imports testing; only _test files may use it",
	},
}

func TestDependencyRule(t *testing.T) {
	for _, v := range violations(listPackages(t)) {
		t.Error(v)
	}
}

// TestRulesCatchForbiddenImports feeds the rules a package graph with known
// breaches, so that a rule that silently matches nothing fails here.
func TestRulesCatchForbiddenImports(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	bad := []pkg{
		{ImportPath: m("client"), Deps: []string{m("internal/push")}},
		{ImportPath: m("internal/push"), Imports: []string{m("internal/store"), m("internal/strictjson")}},
		{ImportPath: m("internal/strictjson"), Imports: []string{m("internal/push")}},
		{ImportPath: m("internal/delivery"), Imports: []string{m("internal/store/embedded"), m("internal/api")}},
		{ImportPath: m("internal/api"), Imports: []string{m("internal/server")}},
		{ImportPath: m("internal/registry"), Imports: []string{m("internal/store/storetest")}},
	}
	got := violations(bad)
	for _, want := range []string{
		"client imports internal/push", "internal/push imports internal/store", "internal/strictjson imports internal/push", "internal/delivery imports internal/store/embedded",
		"internal/delivery imports internal/api", "internal/api imports internal/server", "internal/registry imports internal/store/storetest",
	} {
		found := false
		for _, v := range got {
			found = found || strings.HasPrefix(v, want+":")
		}
		if !found {
			t.Errorf("no violation reported for %q; got %q", want, got)
		}
	}
	good := []pkg{
		{ImportPath: m("internal/server"), Imports: []string{m("internal/store/embedded"), m("internal/api")}},
		{ImportPath: m("internal/apierr"), Imports: []string{m("internal/strictjson")}},
	}
	if v := violations(good); len(v) > 0 {
		t.Errorf("allowed imports reported: %q", v)
	}
}

func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		from := rel(p.ImportPath)
		for _, r := range rules {
			if !r.from(from) {
				continue
			}
			imports := p.Imports
			if r.deps {
				imports = p.Deps
			}
			for _, imp := range imports {
				if !strings.HasPrefix(imp, module) {
					continue
				}
				if to := rel(imp); r.to(to) && to != from {
					out = append(out, fmt.Sprintf("%s imports %s: breaks %q: %s", from, to, r.name, r.reason))
				}
			}
		}
	}
	return out
}

// TestEdgesAreIndependent: API and device transports never import each
// other, so each can change alone.
func TestEdgesAreIndependent(t *testing.T) {
	edgeOf := func(p string) string {
		for _, e := range edges {
			if under(p, e) {
				if e == "internal/gateway" {
					// Each gateway is its own edge; the MQTT codec is a leaf of the MQTT one.
					parts := strings.Split(p, "/")
					if len(parts) >= 3 {
						return strings.Join(parts[:3], "/")
					}
				}
				return e
			}
		}
		return ""
	}
	for _, p := range listPackages(t) {
		from := edgeOf(rel(p.ImportPath))
		if from == "" {
			continue
		}
		for _, imp := range p.Imports {
			if to := edgeOf(rel(imp)); strings.HasPrefix(imp, module) && to != "" && to != from {
				t.Errorf("%s imports %s: edges never import each other; share through the core or a leaf", rel(p.ImportPath), rel(imp))
			}
		}
	}
}
