// Package config holds Herald's settings: one Config with its defaults in one
// place, validated once at start. It knows nothing of flags, environment or
// files; cmd/herald fills it from those.
package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config is everything `herald serve` can be told.
type Config struct {
	DataDir   string // embedded store and local state
	HTTPAddr  string // REST API, device HTTP transports, health
	MQTTAddr  string // MQTT over TCP; empty disables it
	MQTTSAddr string // MQTT over TLS; empty disables it
	TLSCert   string // certificate file: when set, HTTPS on HTTPAddr and the certificate of MQTTS
	TLSKey    string
	// MQTTSCert and MQTTSKey, when set, are the MQTTS listener's own
	// certificate; otherwise it uses TLSCert and TLSKey.
	MQTTSCert, MQTTSKey string
	PublicURL           string // how devices and providers reach HTTPAddr; derived when empty
	AdminToken          string // bearer token for admin calls; generated on first start when empty
	DebugAddr           string // net/http/pprof on its own listener; empty (the default) turns it off
	PostgresURL         string // cluster mode: the system of record
	// PostgresSchema keeps Herald's tables in that schema (created if
	// needed) rather than the connection's default search_path.
	PostgresSchema string
	NATSURL        string // cluster mode: routing between nodes
	// MetricsAddr serves /metrics on a listener of its own instead of the
	// HTTP listener.
	MetricsAddr string
	// MetricsPerApp labels the per-push series with the app key.
	MetricsPerApp bool
	// NATSPrefix begins every subject this cluster uses, so that clusters
	// can share a NATS server.
	NATSPrefix string
	// NodeName names this node on the bus and in logs; the host name and
	// a random suffix when empty.
	NodeName string
	// Recheck is how often, in cluster mode, each live session reads its
	// inbox whatever the bus said: the last cover for a lost doorbell.
	Recheck time.Duration

	MQTTMaxKeepAlive   time.Duration // longest keepalive a client may ask for
	MQTTConnectTimeout time.Duration // how long a new connection may take to send CONNECT
	MQTTMaxPacket      int           // largest packet a device may send
	MQTTWindow         int           // unacknowledged messages in flight per connection
	// MQTTServerReference is where MQTT 5 devices are sent when the node
	// drains (DISCONNECT 0x9C with it as Server Reference); empty: 0x8B.
	MQTTServerReference string

	MaxPayload     int           // bytes of notification plus message
	MaxIDs         int           // registration IDs and aliases per push
	MaxTags        int           // tags per device
	MaxBatch       int           // pushes per batch call
	MaxBody        int64         // bytes of any request body
	DefaultTTL     time.Duration // when a push gives none
	MaxTTL         time.Duration
	MaxSchedule    time.Duration // how far ahead a push's send_at may be
	LongPollMax    time.Duration // longest GET /v1/inbox?wait=
	RegisterRate   float64       // registrations per second per source address
	RegisterBurst  int
	SweepInterval  time.Duration // how often expired messages are purged
	ReportRetain   time.Duration // how long a report outlives its message's expiry
	ShutdownGrace  time.Duration // --drain-timeout: how long SIGTERM's drain may take before the node exits
	LogFormat      string        // "text" or "json"
	LogLevel       string        // "debug", "info", "warn", "error"
	DefaultAppName string        // created on first start

	// Store faults and the data directory (docs/operations.md, "Store faults").
	// StoreMinFree is the free disk, in bytes, the embedded store keeps in
	// reserve: below it writes are refused, while the engine can still
	// finish flushing its memtables (up to two of 64 MiB) and the
	// compactions after them, and a restart can replay its log. 0 keeps
	// none. CockroachDB refuses to start below half its ballast (at most
	// 512 MiB) for the same reason; Herald's engine is configured smaller.
	StoreMinFree int64
	// Init lets a start initialise a data directory that is not the
	// default, or create what is missing in one initialised before (the
	// store, the admin token); without it such a start is refused. A
	// one-off, not a setting to keep.
	Init bool
	// The admin token's other source and the per-app push rate (issue 7).
	AdminTokenFile string  // file holding the admin token, so that it stays out of ps; excludes AdminToken
	AppPushRate    float64 // pushes per second per app, over /v1/push, /v1/push/batch and /wpush
	AppPushBurst   int     // pushes an app may make at once; at least MaxBatch, so a full batch fits

	// Connection caps (docs/operations.md, "Connections"); 0 is no cap.
	MaxConnsPerAddr int // open connections from one source address (IPv6: one /64), all listeners together
	MaxUnauthConns  int // connections not yet authenticated, all addresses together; past it the oldest is closed

	// Request bounds (docs/operations.md, "Requests").
	HeaderTimeout     time.Duration // from a request's first byte to the end of its headers
	BodyTimeout       time.Duration // from a handler's start to the end of the request body
	WriteTimeout      time.Duration // for the client to take an answer; a long-poll gets its wait on top
	MaxHeaderBytes    int           // bytes of a request's headers
	PollMaxBytes      int           // bytes of the messages in one poll answer
	MaxConnsPerDevice int           // a device's WebSocket, SSE and long-poll connections, each; the oldest is closed past it

	// Stored input (issue 7): the push service's subscriptions.
	WebPushRetain           time.Duration // how long a revoked subscription answers 410 before it is purged (then 404)
	WebPushMaxSubscriptions int           // live subscriptions per device

	// The relay to vendor channels (docs/operations.md, "Official channels").
	SecretKey       string        // seals channel credentials: 32 bytes in hex or base64; kept in the data directory when empty
	RelayAttempts   int           // sends of one message to a vendor, retries included
	RelayBackoffMax time.Duration // the longest wait between two retries
	RelayTimeout    time.Duration // one send to a vendor
	RelayPerChannel int           // sends in flight to one app's vendor channel
}

// Default returns the settings `herald serve` starts with.
func Default() Config {
	return Config{
		DataDir:            "./herald-data",
		HTTPAddr:           ":8080",
		MQTTAddr:           ":1883",
		MQTTMaxKeepAlive:   20 * time.Minute,
		MQTTConnectTimeout: 5 * time.Second,
		MQTTMaxPacket:      16 << 10,
		MQTTWindow:         32,
		MaxPayload:         4096,
		MaxIDs:             1000,
		MaxTags:            100,
		MaxBatch:           1000,
		MaxBody:            4 << 20,
		DefaultTTL:         24 * time.Hour,
		MaxTTL:             30 * 24 * time.Hour,
		MaxSchedule:        30 * 24 * time.Hour,
		LongPollMax:        60 * time.Second,
		RegisterRate:       1,
		RegisterBurst:      20,
		SweepInterval:      time.Minute,
		ReportRetain:       24 * time.Hour,
		ShutdownGrace:      30 * time.Second,
		LogFormat:          "text",
		LogLevel:           "info",
		DefaultAppName:     "default",
		StoreMinFree:       256 << 20,
		// FCM's default quota: 600,000 messages a minute per project.
		AppPushRate:             10000,
		AppPushBurst:            20000,
		MaxConnsPerAddr:         1000,
		HeaderTimeout:           10 * time.Second,
		BodyTimeout:             30 * time.Second,
		WriteTimeout:            30 * time.Second,
		MaxHeaderBytes:          16 << 10,
		PollMaxBytes:            1 << 20,
		MaxConnsPerDevice:       8,
		MaxUnauthConns:          DefaultMaxUnauthConns(),
		WebPushRetain:           30 * 24 * time.Hour,
		WebPushMaxSubscriptions: 100,
		RelayAttempts:           8,
		RelayBackoffMax:         10 * time.Minute,
		RelayTimeout:            30 * time.Second,
		RelayPerChannel:         256,
		NATSPrefix:              "herald",
		Recheck:                 time.Minute,
	}
}

// DefaultMaxUnauthConns is half the process's file limit (RLIMIT_NOFILE as
// Go leaves it, raised to the hard limit at start): however many
// connections arrive without credentials, the other half of the
// descriptors stays for authenticated devices, the store and health
// checks. 512 when the limit cannot be read.
func DefaultMaxUnauthConns() int {
	if n := fileLimit(); n > 0 {
		return max(n/2, 16)
	}
	return 512
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data directory must be set"))
	}
	for name, addr := range map[string]string{"http": c.HTTPAddr, "mqtt": c.MQTTAddr, "mqtts": c.MQTTSAddr, "debug-addr": c.DebugAddr} {
		if addr == "" && name != "http" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s address %q: %v", name, addr, err))
		}
	}
	if c.MQTTSAddr != "" && (c.TLSCert == "" || c.TLSKey == "") && (c.MQTTSCert == "" || c.MQTTSKey == "") {
		errs = append(errs, errors.New("mqtts needs mqtts-cert and mqtts-key, or tls-cert and tls-key"))
	}
	if (c.MQTTSCert == "") != (c.MQTTSKey == "") {
		errs = append(errs, errors.New("mqtts-cert and mqtts-key go together"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key go together"))
	}
	if (c.NATSURL != "") && c.PostgresURL == "" {
		errs = append(errs, errors.New("cluster mode (nats) needs postgres too"))
	}
	positive := map[string]int64{
		"max-payload": int64(c.MaxPayload), "max-ids": int64(c.MaxIDs), "max-tags": int64(c.MaxTags),
		"max-batch": int64(c.MaxBatch), "max-body": c.MaxBody, "register-burst": int64(c.RegisterBurst),
		"max-ttl": int64(c.MaxTTL), "max-schedule": int64(c.MaxSchedule), "long-poll-max": int64(c.LongPollMax), "sweep-interval": int64(c.SweepInterval),
		"mqtt-max-keepalive": int64(c.MQTTMaxKeepAlive), "mqtt-connect-timeout": int64(c.MQTTConnectTimeout),
		"mqtt-max-packet": int64(c.MQTTMaxPacket), "mqtt-window": int64(c.MQTTWindow),
		"header-timeout": int64(c.HeaderTimeout), "body-timeout": int64(c.BodyTimeout), "write-timeout": int64(c.WriteTimeout),
		"max-header-bytes": int64(c.MaxHeaderBytes), "poll-max-bytes": int64(c.PollMaxBytes), "max-conns-per-device": int64(c.MaxConnsPerDevice),
		"webpush-retain": int64(c.WebPushRetain), "webpush-max-subscriptions": int64(c.WebPushMaxSubscriptions),
		"relay-attempts": int64(c.RelayAttempts), "relay-backoff-max": int64(c.RelayBackoffMax),
		"relay-timeout": int64(c.RelayTimeout), "relay-per-channel": int64(c.RelayPerChannel),
		"recheck-interval": int64(c.Recheck),
	}
	if c.NATSPrefix == "" || strings.ContainsAny(c.NATSPrefix, "*> \t") || strings.HasPrefix(c.NATSPrefix, ".") || strings.HasSuffix(c.NATSPrefix, ".") {
		errs = append(errs, fmt.Errorf("nats-prefix %q must be a NATS subject without wildcards, such as herald or prod.herald", c.NATSPrefix))
	}
	for name, v := range positive {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be above zero", name))
		}
	}
	if c.MaxConnsPerAddr < 0 || c.MaxUnauthConns < 0 {
		errs = append(errs, errors.New("max-conns-per-addr and max-unauth-conns must be 0 (no cap) or more"))
	}
	if c.DefaultTTL < 0 || c.DefaultTTL > c.MaxTTL {
		errs = append(errs, fmt.Errorf("default-ttl must be between 0 and max-ttl (%s)", c.MaxTTL))
	}
	if c.RegisterRate <= 0 {
		errs = append(errs, errors.New("register-rate must be above zero"))
	}
	if c.MaxBody < int64(c.MaxPayload) {
		errs = append(errs, errors.New("max-body must be at least max-payload"))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log-format must be text or json, not %q", c.LogFormat))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log-level must be debug, info, warn or error, not %q", c.LogLevel))
	}
	if c.StoreMinFree < 0 {
		errs = append(errs, errors.New("store-min-free must be 0 or more"))
	}
	if c.AdminToken != "" && c.AdminTokenFile != "" {
		errs = append(errs, errors.New("give admin-token or admin-token-file, not both"))
	}
	if c.AppPushRate <= 0 {
		errs = append(errs, errors.New("app-push-rate must be above zero"))
	}
	if c.AppPushBurst < c.MaxBatch {
		errs = append(errs, fmt.Errorf("app-push-burst (%d) must be at least max-batch (%d): a batch of N pushes spends N at once", c.AppPushBurst, c.MaxBatch))
	}
	if c.DefaultAppName == "" {
		errs = append(errs, errors.New("default-app must be set"))
	}
	return errors.Join(errs...)
}
