package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/heraldpush/herald/client"
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	server, appKey, masterSecret, adminToken, dataDir string
	args                                              []string // positional arguments
}

// Which credentials a command takes, so that it lists only its own flags.
const (
	appKeyFlag   = 1 << iota // --app-key
	providerFlag             // --app-key and --master-secret
	adminFlag                // --admin-token and --data
)

func (c *clientFlags) register(fs *flag.FlagSet, creds int) {
	fs.StringVar(&c.server, "server", "http://127.0.0.1:8080", "Herald's base URL (a host:port is taken as http://)")
	if creds&(appKeyFlag|providerFlag) != 0 {
		fs.StringVar(&c.appKey, "app-key", "", "the app's key")
	}
	if creds&providerFlag != 0 {
		fs.StringVar(&c.masterSecret, "master-secret", "", "the app's master secret")
	}
	if creds&adminFlag != 0 {
		fs.StringVar(&c.adminToken, "admin-token", "", "admin token (default: read from the data directory)")
		fs.StringVar(&c.dataDir, "data", "./herald-data", "a local server's data directory, to find its admin token")
	}
}

// parse parses args, with flags before or after the positional arguments,
// and fills flags not given from HERALD_* variables.
func (c *clientFlags) parse(fs *flag.FlagSet, args []string) error {
	for {
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		c.args = append(c.args, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if err := applySources(fs, ""); err != nil {
		return err
	}
	c.server = strings.TrimRight(c.server, "/")
	if !strings.Contains(c.server, "://") {
		c.server = "http://" + c.server // --server 127.0.0.1:8080
	}
	return nil
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args into fs. The flags are listed only when asked
// for (-h, to stdout, and then ErrHelp, which exits 0); a wrong flag gets a
// one-line error that says how to list them, not the whole list after it.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	defer fs.SetOutput(out)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(helpOut)
		fmt.Fprintf(helpOut, "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		return flag.ErrHelp
	}
	if err != nil {
		return fmt.Errorf("%s: %w (%s -h lists its flags)", fs.Name(), err, fs.Name())
	}
	return nil
}

// helpOut is where -h lists the flags: standard output, as a reply asked
// for rather than an error.
var helpOut io.Writer = os.Stdout

// do sends one API call and decodes the answer; errors come back as
// *client.Error with the server's code.
func do(ctx context.Context, method, url string, auth func(*http.Request), in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != nil {
		auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return unreachable(url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode >= 300 {
		var env struct {
			Error *client.Error `json:"error"`
		}
		if json.Unmarshal(raw, &env) == nil && env.Error != nil {
			env.Error.Status = resp.StatusCode
			return env.Error
		}
		return fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	if out != nil && len(raw) > 0 {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (c *clientFlags) providerAuth() (func(*http.Request), error) {
	if c.appKey == "" || c.masterSecret == "" {
		return nil, errors.New("give --app-key and --master-secret (or HERALD_APP_KEY and HERALD_MASTER_SECRET)")
	}
	return func(r *http.Request) { r.SetBasicAuth(c.appKey, c.masterSecret) }, nil
}

func appCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "channel" {
		return channelCmd(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "create" {
		return errors.New("usage: herald app create NAME | herald app channel set|show|delete ...")
	}
	var c clientFlags
	fs := newFlags("app create", stderr)
	c.register(fs, adminFlag)
	if err := c.parse(fs, args[1:]); err != nil {
		return err
	}
	if len(c.args) != 1 {
		return errors.New("usage: herald app create [flags] NAME")
	}
	token := c.adminToken
	if token == "" {
		b, err := os.ReadFile(filepath.Join(c.dataDir, "admin-token"))
		if err != nil {
			return errors.New("give --admin-token (or HERALD_ADMIN_TOKEN); none found in the data directory")
		}
		token = strings.TrimSpace(string(b))
	}
	var out struct {
		AppKey       string `json:"app_key"`
		Name         string `json:"name"`
		MasterSecret string `json:"master_secret"`
	}
	err := do(ctx, "POST", c.server+"/v1/apps", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) },
		map[string]string{"name": c.args[0]}, &out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "app            %s\napp_key        %s\nmaster_secret  %s\n", out.Name, out.AppKey, out.MasterSecret)
	return nil
}

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func send(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c clientFlags
	var to, aliases, tags, tagAnd, tagNot, platforms listFlag
	fs := newFlags("send", stderr)
	c.register(fs, providerFlag)
	fs.Var(&to, "to", "registration ID (repeatable, or comma-separated)")
	fs.Var(&aliases, "alias", "alias (repeatable)")
	fs.Var(&tags, "tag", "devices with any of these tags (repeatable)")
	fs.Var(&tagAnd, "tag-and", "devices with all of these tags (repeatable)")
	fs.Var(&tagNot, "tag-not", "devices with none of these tags (repeatable)")
	fs.Var(&platforms, "platform", "only these platforms: android, ios, web, other (repeatable)")
	all := fs.Bool("all", false, "every device of the app")
	title := fs.String("title", "", "notification title")
	body := fs.String("body", "", "notification body")
	data := fs.String("message", "", "pass-through message: a JSON value")
	ttl := fs.Int64("ttl", -1, "seconds to keep the message for offline devices (default: the server's)")
	collapse := fs.String("collapse-id", "", "a newer message with this id replaces a waiting one")
	priority := fs.String("priority", "", "normal or high")
	sendAt := fs.String("send-at", "", "deliver at this RFC 3339 time")
	idem := fs.String("idempotency-key", "", "a retried push with the same key is not sent twice")
	asJSON := fs.Bool("json", false, "print the server's answer as JSON, for scripts")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	auth, err := c.providerAuth()
	if err != nil {
		return err
	}
	req := map[string]any{}
	if *all {
		req["audience"] = "all"
	} else {
		aud := map[string][]string{}
		for key, l := range map[string]listFlag{"registration_id": to, "alias": aliases, "tag": tags, "tag_and": tagAnd, "tag_not": tagNot} {
			if len(l) > 0 {
				aud[key] = l
			}
		}
		if len(aud) == 0 {
			return errors.New("give an audience: --to, --alias, --tag, --tag-and, --tag-not or --all")
		}
		req["audience"] = aud
	}
	if len(platforms) > 0 {
		req["platform"] = platforms
	}
	if *title != "" || *body != "" {
		req["notification"] = map[string]string{"title": *title, "body": *body}
	}
	if *data != "" {
		if !json.Valid([]byte(*data)) {
			return errors.New("--message must be a JSON value")
		}
		req["message"] = json.RawMessage(*data)
	}
	opts := map[string]any{}
	if *ttl >= 0 {
		opts["ttl"] = *ttl
	}
	for key, v := range map[string]string{"collapse_id": *collapse, "priority": *priority, "idempotency_key": *idem} {
		if v != "" {
			opts[key] = v
		}
	}
	if *sendAt != "" {
		t, err := time.Parse(time.RFC3339, *sendAt)
		if err != nil {
			return fmt.Errorf("--send-at: %w", err)
		}
		opts["send_at"] = t
	}
	if len(opts) > 0 {
		req["options"] = opts
	}
	var out map[string]any
	if err := do(ctx, "POST", c.server+"/v1/push", auth, req, &out); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, out)
	}
	fmt.Fprintln(stdout, sendSummary(out, *all || len(tags)+len(tagAnd)+len(tagNot) > 0))
	return nil
}

// sendSummary is one line that says what the push's answer means.
func sendSummary(out map[string]any, fanout bool) string {
	id, _ := out["msg_id"].(string)
	var b strings.Builder
	fmt.Fprintf(&b, "accepted %s", id)
	if dup, _ := out["duplicate"].(bool); dup {
		b.WriteString(" (a retry of an earlier push with the same idempotency key: not sent again)")
	}
	n, _ := out["targeted"].(float64)
	switch {
	case fanout && n > 0:
		fmt.Fprintf(&b, ": %d named devices, and every matching device as it connects or polls", int(n))
	case fanout:
		b.WriteString(": every matching device, as it connects or polls")
	case n == 1:
		b.WriteString(": 1 device")
	default:
		fmt.Fprintf(&b, ": %d devices", int(n))
	}
	if unknown, _ := out["unknown"].([]any); len(unknown) > 0 {
		fmt.Fprintf(&b, "; %d names matched no device", len(unknown))
	}
	fmt.Fprintf(&b, " (herald report %s)", id)
	return b.String()
}

// recall stops a message from reaching devices that have not received it.
func recall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c clientFlags
	fs := newFlags("recall", stderr)
	c.register(fs, providerFlag)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if len(c.args) != 1 {
		return errors.New("usage: herald recall [flags] MSG_ID")
	}
	auth, err := c.providerAuth()
	if err != nil {
		return err
	}
	if err := do(ctx, "DELETE", c.server+"/v1/messages/"+c.args[0], auth, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recalled %s: devices that have not received it never will\n", c.args[0])
	return nil
}

// deviceCmd shows or deletes a device.
func deviceCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: herald device show|delete [flags] REGISTRATION_ID"
	if len(args) == 0 || args[0] != "show" && args[0] != "delete" {
		return errors.New(use)
	}
	verb := args[0]
	var c clientFlags
	fs := newFlags("device "+verb, stderr)
	c.register(fs, providerFlag)
	if err := c.parse(fs, args[1:]); err != nil {
		return err
	}
	if len(c.args) != 1 {
		return errors.New(use)
	}
	auth, err := c.providerAuth()
	if err != nil {
		return err
	}
	url := c.server + "/v1/devices/" + neturl.PathEscape(c.args[0])
	if verb == "delete" {
		if err := do(ctx, "DELETE", url, auth, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s: its connections are closed and it must register again\n", c.args[0])
		return nil
	}
	var out map[string]any
	if err := do(ctx, "GET", url, auth, nil, &out); err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func report(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c clientFlags
	fs := newFlags("report", stderr)
	c.register(fs, providerFlag)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if len(c.args) != 1 {
		return errors.New("usage: herald report [flags] MSG_ID")
	}
	auth, err := c.providerAuth()
	if err != nil {
		return err
	}
	var out map[string]any
	if err := do(ctx, "GET", c.server+"/v1/messages/"+c.args[0], auth, nil, &out); err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func listen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c clientFlags
	var tags listFlag
	fs := newFlags("listen", stderr)
	c.register(fs, appKeyFlag)
	platform := fs.String("platform", "other", "platform to register as")
	alias := fs.String("alias", "", "alias to register with")
	fs.Var(&tags, "tag", "tag to register with (repeatable)")
	state := fs.String("state", "herald-device.json", "file that keeps the registration between runs")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	transport := fs.String("transport", "mqtt", "mqtt (a persistent connection) or poll (HTTP long-polling); mqtt falls back to poll when the server has no MQTT listener")
	mqttURL := fs.String("mqtt", "", "MQTT URL (default: the one the server gave at registration)")
	fresh := fs.Bool("fresh", false, "register a new device even if --state holds one")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *fresh {
		if err := os.Remove(*state); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	reg, saved, err := loadOrRegister(ctx, &c, *state, client.RegisterRequest{
		AppKey: c.appKey, Platform: *platform, Alias: *alias, Tags: tags,
	})
	if err != nil {
		return err
	}
	if saved && (*alias != "" && *alias != reg.Alias || len(tags) > 0 && !slices.Equal(tags, reg.Tags)) {
		fmt.Fprintf(stderr, "using the device saved in %s (alias %q, tags %v): --alias and --tag apply to a new registration; --fresh makes one\n",
			*state, reg.Alias, reg.Tags)
	}
	if *mqttURL != "" {
		reg.MQTTURL = *mqttURL
	}
	dev := client.NewDevice(*reg, nil)
	listen := dev.Listen
	via := "long-polling " + reg.Server
	if *transport == "mqtt" && reg.MQTTURL != "" {
		listen = func(ctx context.Context, h func(client.Message) error) error {
			return dev.ListenMQTT(ctx, reg.MQTTURL, h)
		}
		via = "MQTT " + reg.MQTTURL
	} else if *transport != "mqtt" && *transport != "poll" {
		return fmt.Errorf("--transport must be mqtt or poll, not %q", *transport)
	}
	fmt.Fprintf(stderr, "listening as %s over %s\n", reg.RegistrationID, via)
	received := 0
	err = listen(ctx, func(m client.Message) error {
		if err := json.NewEncoder(stdout).Encode(m); err != nil {
			return err
		}
		if received++; *count > 0 && received >= *count {
			return client.ErrStop
		}
		return nil
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	if e := (*client.Error)(nil); errors.As(err, &e) && e.Status == http.StatusUnauthorized || errors.Is(err, client.ErrRefused) {
		return fmt.Errorf("the server refuses device %s (deleted, or saved for another server): herald listen --fresh registers a new one (%w)", reg.RegistrationID, err)
	}
	return err
}

// loadOrRegister reuses the registration saved in path for the same server
// and app, or registers anew and saves it (readable by the owner only: it
// holds the device secret).
// It reports whether the registration was the saved one.
func loadOrRegister(ctx context.Context, c *clientFlags, path string, req client.RegisterRequest) (*client.Registration, bool, error) {
	if raw, err := os.ReadFile(path); err == nil {
		var reg client.Registration
		if json.Unmarshal(raw, &reg) == nil && reg.Server == c.server && (c.appKey == "" || reg.AppKey == c.appKey) {
			return &reg, true, nil
		}
	}
	if c.appKey == "" {
		return nil, false, errors.New("give --app-key (or HERALD_APP_KEY) to register")
	}
	reg, err := client.Register(ctx, nil, c.server, req)
	if err != nil {
		return nil, false, unreachable(c.server, err)
	}
	raw, _ := json.MarshalIndent(reg, "", "  ")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return nil, false, fmt.Errorf("saving the registration: %w", err)
	}
	return reg, false, nil
}

// unreachable explains a call that reached no server.
func unreachable(u string, err error) error {
	var netErr net.Error
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.As(err, &netErr) {
		base := u
		if p, perr := neturl.Parse(u); perr == nil {
			base = p.Scheme + "://" + p.Host
		}
		return fmt.Errorf("cannot reach %s: is `herald serve` running? (--server / HERALD_SERVER): %w", base, err)
	}
	return err
}
