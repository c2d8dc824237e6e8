package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/heraldpush/herald/internal/config"
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
		// Raw values: a number goes to its flag as written, where a
		// decoded float64 would print 8388608 as 8.388608e+06.
		var values map[string]json.RawMessage
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
			text, err := settingText(v)
			if err == nil {
				err = setFlag(fs, name, text)
			}
			if err != nil {
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
		if e := setFlag(fs, f.Name, v); e != nil {
			err = fmt.Errorf("%s: %w", envName(f.Name), e)
		}
	})
	return err
}

// settingText is a config file value as a flag takes it: a string's
// contents, a number or a boolean as written.
func settingText(v json.RawMessage) (string, error) {
	v = bytes.TrimSpace(v)
	switch {
	case len(v) > 0 && v[0] == '"':
		var s string
		err := json.Unmarshal(v, &s)
		return s, err
	case bytes.Equal(v, []byte("true")), bytes.Equal(v, []byte("false")):
		return string(v), nil
	case len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9'):
		return string(v), nil
	}
	return "", fmt.Errorf("%s is not a string, a number or true/false", v)
}

// setFlag sets flag name to value, with an error that says what the
// setting takes rather than the flag package's "parse error".
func setFlag(fs *flag.FlagSet, name, value string) error {
	f := fs.Lookup(name)
	if err := fs.Set(name, value); err != nil {
		return fmt.Errorf("%q is not %s", value, expected(f))
	}
	return nil
}

// expected describes what flag f takes.
func expected(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "a valid value"
	}
	switch g.Get().(type) {
	case time.Duration:
		return "a duration with its unit, such as 30s, 5m or 720h"
	case bool:
		return "true or false"
	case int, int64, uint, uint64:
		return "a whole number"
	case float64:
		return "a number"
	}
	return "a valid value"
}

// exampleConfig is a config file with every setting of herald serve at its
// default (docs/herald.example.json), in flag order, but for max-unauth-conns,
// whose default is half the machine's file limit.
func exampleConfig() ([]byte, error) {
	cfg := config.Default()
	fs, _ := serveFlags(&cfg, io.Discard)
	var b bytes.Buffer
	b.WriteString("{\n")
	first := true
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || f.Name == "max-unauth-conns" || strings.HasPrefix(f.Usage, "the old name of") || err != nil {
			return
		}
		var v []byte
		switch x := f.Value.(flag.Getter).Get().(type) {
		case time.Duration, string:
			v, err = json.Marshal(f.Value.String())
		default:
			v, err = json.Marshal(x)
		}
		if !first {
			b.WriteString(",\n")
		}
		first = false
		fmt.Fprintf(&b, "  %q: %s", f.Name, v)
	})
	b.WriteString("\n}\n")
	return b.Bytes(), err
}
