package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/heraldpush/herald/internal/strictjson"
)

// envName is the environment variable that sets flag name: HERALD_ and the
// name in upper case with dashes as underscores.
func envName(name string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applySources fills every flag not given on the command line, first from
// the config file (a JSON object keyed by flag name), then from HERALD_*
// environment variables, so that the precedence is: flags, environment,
// file, defaults. Values go through each flag's own parser, so a duration is
// written as in a flag ("90s", "720h").
func applySources(fs *flag.FlagSet, file string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		var values map[string]any
		if err := strictjson.Decode(raw, &values); err != nil {
			return fmt.Errorf("config file %s: %w", file, err)
		}
		// A setting given twice (also as max_body and max-body) would take
		// whichever value the map's order picks.
		set := map[string]string{}
		for key := range values {
			name := strings.ReplaceAll(key, "_", "-")
			if fs.Lookup(name) == nil || name == "config" {
				return fmt.Errorf("config file %s: unknown setting %q", file, key)
			}
			if other, dup := set[name]; dup {
				return fmt.Errorf("config file %s: %q and %q are the same setting", file, other, key)
			}
			set[name] = key
		}
		for key, v := range values {
			name := strings.ReplaceAll(key, "_", "-")
			if given[name] || os.Getenv(envName(name)) != "" {
				continue
			}
			if err := fs.Set(name, fmt.Sprint(v)); err != nil {
				return fmt.Errorf("config file %s: %s: %w", file, key, err)
			}
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || given[f.Name] || err != nil {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s: %w", envName(f.Name), e)
		}
	})
	return err
}
