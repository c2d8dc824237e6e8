package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/heraldpush/herald/internal/config"
	"github.com/heraldpush/herald/internal/server"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := config.Default()
	fs, configFile := serveFlags(&cfg, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	// Asked before applySources, which sets flags from the environment
	// and the file: only a flag on the command line shows in ps.
	tokenInArgs := false
	fs.Visit(func(f *flag.Flag) { tokenInArgs = tokenInArgs || f.Name == "admin-token" })
	if *configFile == "" {
		*configFile = os.Getenv("HERALD_CONFIG")
	}
	if err := applySources(fs, *configFile); err != nil {
		return err
	}

	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if tokenInArgs {
		log.Warn("--admin-token on the command line shows in ps to every user of this machine; use HERALD_ADMIN_TOKEN or --admin-token-file")
	}
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	printBanner(stdout, srv.Info())
	return srv.Run(ctx)
}

// serveFlags defines herald serve's flags over cfg, whose values are their
// defaults, and returns them with the --config flag's value.
func serveFlags(cfg *config.Config, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "JSON file of settings keyed by flag name (flags and HERALD_* variables override it)")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "directory of the embedded store and local state")
	fs.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP listen address (API, device HTTP transports, health)")
	fs.StringVar(&cfg.MQTTAddr, "mqtt", cfg.MQTTAddr, "MQTT listen address; empty to disable")
	fs.StringVar(&cfg.MQTTSAddr, "mqtts", cfg.MQTTSAddr, "MQTT over TLS listen address; empty to disable")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "TLS certificate file (PEM): the HTTP listener then serves only HTTPS (and HTTP/2), and --mqtts uses it too")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "TLS private key file (PEM) of --tls-cert")
	fs.StringVar(&cfg.MQTTSCert, "mqtts-cert", cfg.MQTTSCert, "the MQTTS listener's own certificate file (PEM); default: --tls-cert")
	fs.StringVar(&cfg.MQTTSKey, "mqtts-key", cfg.MQTTSKey, "the private key file (PEM) of --mqtts-cert")
	fs.StringVar(&cfg.PublicURL, "public-url", cfg.PublicURL, "base URL devices and providers use to reach the HTTP listener")
	fs.StringVar(&cfg.AdminToken, "admin-token", cfg.AdminToken, "admin bearer token, at least 128 bits (openssl rand -hex 16); generated and kept in the data directory when empty. Prefer HERALD_ADMIN_TOKEN or --admin-token-file: a flag shows in ps")
	fs.StringVar(&cfg.DebugAddr, "debug-addr", cfg.DebugAddr, "serve Go's profiler (net/http/pprof) on this address, e.g. 127.0.0.1:6060; off when empty")
	fs.StringVar(&cfg.PostgresURL, "postgres", cfg.PostgresURL, "PostgreSQL URL: store everything there (cluster mode)")
	fs.StringVar(&cfg.PostgresSchema, "postgres-schema", cfg.PostgresSchema, "PostgreSQL schema for Herald's tables (default: the connection's search_path)")
	fs.StringVar(&cfg.NATSURL, "nats", cfg.NATSURL, "NATS URL (comma-separated for several servers): route between nodes; with --postgres, cluster mode")
	fs.StringVar(&cfg.MetricsAddr, "metrics", cfg.MetricsAddr, "serve Prometheus metrics (/metrics) on this address of its own, e.g. 127.0.0.1:9090, instead of on the HTTP listener")
	fs.BoolVar(&cfg.MetricsPerApp, "metrics-per-app", cfg.MetricsPerApp, "label the per-push metrics with the app key (for a few apps; each app adds series)")
	fs.StringVar(&cfg.NATSPrefix, "nats-prefix", cfg.NATSPrefix, "first token(s) of every NATS subject this cluster uses, so that clusters can share a NATS server")
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "this node's name on the bus and in logs (default: host name and a random suffix)")
	fs.DurationVar(&cfg.Recheck, "recheck-interval", cfg.Recheck, "cluster mode: how often each live session reads its inbox again whatever the bus said (covers a lost bus message)")
	fs.DurationVar(&cfg.MQTTMaxKeepAlive, "mqtt-max-keepalive", cfg.MQTTMaxKeepAlive, "longest MQTT keepalive a device may ask for (5.0 clients are told in Server Keep Alive)")
	fs.DurationVar(&cfg.MQTTConnectTimeout, "mqtt-connect-timeout", cfg.MQTTConnectTimeout, "how long a new MQTT connection may take to send CONNECT")
	fs.IntVar(&cfg.MQTTMaxPacket, "mqtt-max-packet", cfg.MQTTMaxPacket, "largest MQTT packet a device may send, in bytes")
	fs.StringVar(&cfg.MQTTServerReference, "mqtt-server-reference", cfg.MQTTServerReference, "host:port (space-separated for several) that MQTT 5 devices are sent to when this node drains: DISCONNECT 0x9C with it as Server Reference instead of 0x8B; in a cluster, the other nodes or their load balancer")
	fs.IntVar(&cfg.MQTTWindow, "mqtt-window", cfg.MQTTWindow, "most unacknowledged MQTT messages in flight per device (caps a 5.0 client's Receive Maximum)")
	fs.IntVar(&cfg.MaxPayload, "max-payload", cfg.MaxPayload, "largest notification plus message, in bytes")
	fs.IntVar(&cfg.MaxIDs, "max-ids", cfg.MaxIDs, "most registration IDs and aliases in one push")
	fs.IntVar(&cfg.MaxTags, "max-tags", cfg.MaxTags, "most tags on one device")
	fs.IntVar(&cfg.MaxBatch, "max-batch", cfg.MaxBatch, "most pushes in one batch call and messages in one poll")
	fs.Int64Var(&cfg.MaxBody, "max-body", cfg.MaxBody, "largest request body, in bytes")
	fs.DurationVar(&cfg.DefaultTTL, "default-ttl", cfg.DefaultTTL, "TTL of a push that gives none")
	fs.DurationVar(&cfg.MaxTTL, "max-ttl", cfg.MaxTTL, "longest TTL; longer ones are clamped")
	fs.DurationVar(&cfg.MaxSchedule, "max-schedule", cfg.MaxSchedule, "how far ahead a push's send_at may be (400 bad_option past it)")
	fs.DurationVar(&cfg.LongPollMax, "long-poll-max", cfg.LongPollMax, "longest long-poll wait")
	fs.Float64Var(&cfg.RegisterRate, "register-rate", cfg.RegisterRate, "registrations per second per source address (calls with the master secret are exempt)")
	fs.IntVar(&cfg.RegisterBurst, "register-burst", cfg.RegisterBurst, "registrations a source address may make at once")
	fs.DurationVar(&cfg.SweepInterval, "sweep-interval", cfg.SweepInterval, "how often expired messages are purged")
	fs.DurationVar(&cfg.ReportRetain, "report-retain", cfg.ReportRetain, "how long a delivery report outlives its message")
	fs.DurationVar(&cfg.ShutdownGrace, "drain-timeout", cfg.ShutdownGrace, "how long the drain on SIGTERM or SIGINT may take (requests in flight finish, connections are told to go) before the node exits")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "the old name of --drain-timeout")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.DefaultAppName, "default-app", cfg.DefaultAppName, "name of the app created on first start")
	fs.Int64Var(&cfg.StoreMinFree, "store-min-free", cfg.StoreMinFree, "free disk space, in bytes, below which the embedded store refuses writes (503); 0 keeps no reserve")
	fs.BoolVar(&cfg.Init, "init", cfg.Init, "initialise the data directory: needed once for a new --data (the default ./herald-data needs none) and to recreate a lost store or admin token; creates only what is missing")
	fs.StringVar(&cfg.AdminTokenFile, "admin-token-file", cfg.AdminTokenFile, "file holding the admin token (a trailing newline is dropped), instead of --admin-token")
	fs.Float64Var(&cfg.AppPushRate, "app-push-rate", cfg.AppPushRate, "pushes per second per app over /v1/push, /v1/push/batch (one per push in it) and /wpush; beyond it 429 with Retry-After")
	fs.IntVar(&cfg.AppPushBurst, "app-push-burst", cfg.AppPushBurst, "pushes an app may make at once; at least --max-batch")
	// Connection caps (docs/operations.md, "Connections").
	fs.IntVar(&cfg.MaxConnsPerAddr, "max-conns-per-addr", cfg.MaxConnsPerAddr, "most open connections from one source address (IPv6: one /64) over HTTP and MQTT together; more are refused at accept; 0 for no cap")
	fs.IntVar(&cfg.MaxUnauthConns, "max-unauth-conns", cfg.MaxUnauthConns, "most connections not yet authenticated, all addresses together; past it the oldest is closed (default: half the file limit); 0 for no cap")
	// Request bounds (docs/operations.md, "Requests").
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", cfg.HeaderTimeout, "how long a client may take to send a request's headers")
	fs.DurationVar(&cfg.BodyTimeout, "body-timeout", cfg.BodyTimeout, "how long a client may take to send a request's body, from when its headers are read (408 past it)")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", cfg.WriteTimeout, "how long a client may take to read an answer; a long-poll gets its wait on top")
	fs.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", cfg.MaxHeaderBytes, "largest request headers, in bytes (431 past it)")
	fs.IntVar(&cfg.PollMaxBytes, "poll-max-bytes", cfg.PollMaxBytes, "most bytes of messages in one poll answer (always at least one message); the rest come on the next poll")
	fs.IntVar(&cfg.MaxConnsPerDevice, "max-conns-per-device", cfg.MaxConnsPerDevice, "most WebSocket, SSE and long-poll connections one device holds on each transport; the oldest is closed past it")
	// Stored input (issue 7).
	fs.StringVar(&cfg.SecretKey, "secret-key", cfg.SecretKey, "the key that seals apps' channel credentials at rest: 32 bytes in hex or base64 (openssl rand -hex 32); generated and kept in the data directory when empty; every node of a cluster needs the same. Prefer HERALD_SECRET_KEY: a flag shows in ps")
	fs.IntVar(&cfg.RelayAttempts, "relay-attempts", cfg.RelayAttempts, "sends of one message to a vendor (APNs, FCM, Web Push), retries included, before it is reported failed")
	fs.DurationVar(&cfg.RelayBackoffMax, "relay-backoff-max", cfg.RelayBackoffMax, "the longest wait between two retries of a relay (exponential from 1 s with jitter, or the vendor's Retry-After)")
	fs.DurationVar(&cfg.RelayTimeout, "relay-timeout", cfg.RelayTimeout, "how long one send to a vendor may take before it is retried")
	fs.IntVar(&cfg.RelayPerChannel, "relay-per-channel", cfg.RelayPerChannel, "sends in flight to one app's vendor channel: a slow vendor holds only these")
	fs.DurationVar(&cfg.WebPushRetain, "webpush-retain", cfg.WebPushRetain, "how long a revoked Web Push subscription answers 410 before it is purged (then 404)")
	fs.IntVar(&cfg.WebPushMaxSubscriptions, "webpush-max-subscriptions", cfg.WebPushMaxSubscriptions, "most live Web Push subscriptions (Firefox channels) per device")
	return fs, configFile
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func printBanner(w io.Writer, in server.Info) {
	if in.Node != "" {
		fmt.Fprintf(w, "Herald is running (store: %s; cluster node %s)\n", in.Store, in.Node)
	} else {
		fmt.Fprintf(w, "Herald is running (store: %s)\n", in.Store)
	}
	fmt.Fprintf(w, "%s\n\n", version())
	fmt.Fprintf(w, "  HTTP API        %s\n", in.HTTPURL)
	fmt.Fprintf(w, "  register        POST %s/v1/devices\n", in.HTTPURL)
	fmt.Fprintf(w, "  push            POST %s/v1/push\n", in.HTTPURL)
	fmt.Fprintf(w, "  poll            GET  %s/v1/inbox?wait=30\n", in.HTTPURL)
	if in.MQTTURL != "" {
		fmt.Fprintf(w, "  MQTT            %s   (client id and user = registration_id, password = device_secret, topic devices/{registration_id})\n", in.MQTTURL)
	}
	if in.MQTTSURL != "" {
		fmt.Fprintf(w, "  MQTT over TLS   %s\n", in.MQTTSURL)
	}
	fmt.Fprintf(w, "  MQTT over WS    %s   (subprotocol mqtt)\n", in.MQTTWSURL)
	fmt.Fprintf(w, "  WebSocket       %s\n", in.WSURL)
	fmt.Fprintf(w, "  SSE             %s/v1/inbox/stream\n", in.HTTPURL)
	fmt.Fprintf(w, "  demo            %s/demo   (this browser as a device; %s/client.js is the client)\n", in.HTTPURL, in.HTTPURL)
	fmt.Fprintf(w, "  console         %s/console/\n", in.HTTPURL)
	fmt.Fprintf(w, "  Firefox push    %s?app_key=%s   (dom.push.serverURL)\n", in.MozPushURL, in.AppKey)
	metricsURL := in.MetricsURL
	if metricsURL == "" {
		metricsURL = in.HTTPURL + "/metrics"
	}
	fmt.Fprintf(w, "  health          %s/healthz  %s/readyz\n", in.HTTPURL, in.HTTPURL)
	fmt.Fprintf(w, "  metrics         %s\n\n", metricsURL)
	fmt.Fprintf(w, "  app             %s\n", in.AppName)
	fmt.Fprintf(w, "  app_key         %s\n", in.AppKey)
	if in.AppSecret != "" {
		fmt.Fprintf(w, "  master_secret   %s   (shown once: keep it)\n", in.AppSecret)
	} else {
		fmt.Fprintf(w, "  master_secret   (shown on first start; create another app with `herald app create NAME`)\n")
	}
	switch {
	case in.AdminTokenNew:
		fmt.Fprintf(w, "  admin token     %s   (kept in %s)\n", in.AdminToken, in.AdminTokenFile)
	case in.AdminTokenFile != "":
		fmt.Fprintf(w, "  admin token     in %s\n", in.AdminTokenFile)
	default:
		fmt.Fprintf(w, "  admin token     as configured\n")
	}
	fmt.Fprintf(w, "\nFor the client commands:\n  export HERALD_SERVER=%s HERALD_APP_KEY=%s", in.HTTPURL, in.AppKey)
	if in.AppSecret != "" {
		fmt.Fprintf(w, " HERALD_MASTER_SECRET=%s", in.AppSecret)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
}
