// Package config holds Herald's settings: one Config with its defaults in one
// place, validated once at start. It knows nothing of flags, environment or
// files; cmd/herald fills it from those.
package config

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is everything `herald serve` can be told.
type Config struct {
	DataDir     string // embedded store and local state
	HTTPAddr    string // REST API, device HTTP transports, health
	MQTTAddr    string // MQTT over TCP; empty disables it
	MQTTSAddr   string // MQTT over TLS; empty disables it
	TLSCert     string // certificate file for MQTTS (and HTTPS when set)
	TLSKey      string
	PublicURL   string // how devices and providers reach HTTPAddr; derived when empty
	AdminToken  string // bearer token for admin calls; generated on first start when empty
	DebugAddr   string // net/http/pprof on its own listener; empty (the default) turns it off
	PostgresURL string // cluster mode: the system of record
	// PostgresSchema keeps Herald's tables in that schema (created if
	// needed) rather than the connection's default search_path.
	PostgresSchema string
	NATSURL        string // cluster mode: routing between nodes

	MQTTMaxKeepAlive   time.Duration // longest keepalive a client may ask for
	MQTTConnectTimeout time.Duration // how long a new connection may take to send CONNECT
	MQTTMaxPacket      int           // largest packet a device may send
	MQTTWindow         int           // unacknowledged messages in flight per connection

	MaxPayload     int           // bytes of notification plus message
	MaxIDs         int           // registration IDs and aliases per push
	MaxTags        int           // tags per device
	MaxBatch       int           // pushes per batch call
	MaxBody        int64         // bytes of any request body
	DefaultTTL     time.Duration // when a push gives none
	MaxTTL         time.Duration
	LongPollMax    time.Duration // longest GET /v1/inbox?wait=
	RegisterRate   float64       // registrations per second per source address
	RegisterBurst  int
	SweepInterval  time.Duration // how often expired messages are purged
	ReportRetain   time.Duration // how long a report outlives its message's expiry
	ShutdownGrace  time.Duration // how long SIGTERM waits for requests in flight
	LogFormat      string        // "text" or "json"
	LogLevel       string        // "debug", "info", "warn", "error"
	DefaultAppName string        // created on first start

	// Stored input (issue 7): the push service's subscriptions.
	WebPushRetain           time.Duration // how long a revoked subscription answers 410 before it is purged (then 404)
	WebPushMaxSubscriptions int           // live subscriptions per device
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
		LongPollMax:        60 * time.Second,
		RegisterRate:       1,
		RegisterBurst:      20,
		SweepInterval:      time.Minute,
		ReportRetain:       24 * time.Hour,
		ShutdownGrace:      10 * time.Second,
		LogFormat:          "text",
		LogLevel:           "info",
		DefaultAppName:     "default",

		WebPushRetain:           30 * 24 * time.Hour,
		WebPushMaxSubscriptions: 100,
	}
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
	if c.MQTTSAddr != "" && (c.TLSCert == "" || c.TLSKey == "") {
		errs = append(errs, errors.New("mqtts needs tls-cert and tls-key"))
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
		"max-ttl": int64(c.MaxTTL), "long-poll-max": int64(c.LongPollMax), "sweep-interval": int64(c.SweepInterval),
		"mqtt-max-keepalive": int64(c.MQTTMaxKeepAlive), "mqtt-connect-timeout": int64(c.MQTTConnectTimeout),
		"mqtt-max-packet": int64(c.MQTTMaxPacket), "mqtt-window": int64(c.MQTTWindow),
		"webpush-retain": int64(c.WebPushRetain), "webpush-max-subscriptions": int64(c.WebPushMaxSubscriptions),
	}
	for name, v := range positive {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be above zero", name))
		}
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
	if c.DefaultAppName == "" {
		errs = append(errs, errors.New("default-app must be set"))
	}
	return errors.Join(errs...)
}
