// Package server is the composition root: it builds every part of Herald
// from a config.Config, owns the listeners and drains them on shutdown. It is
// the only package that knows the concrete backends.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldpush/herald/internal/api"
	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/config"
	"github.com/heraldpush/herald/internal/delivery"
	"github.com/heraldpush/herald/internal/gateway/poll"
	"github.com/heraldpush/herald/internal/metrics"
	"github.com/heraldpush/herald/internal/netlimit"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/registry"
	"github.com/heraldpush/herald/internal/router"
	natsrouter "github.com/heraldpush/herald/internal/router/nats"
	"github.com/heraldpush/herald/internal/session"
	"github.com/heraldpush/herald/internal/store"
	"github.com/heraldpush/herald/internal/webpush"
)

// Server is one Herald node.
type Server struct {
	cfg   config.Config
	log   *slog.Logger
	store store.Store
	hub   *session.Hub
	reg   *registry.Registry
	deliv *delivery.Service
	api   *api.API
	// webpush is the push service, shared by the API and /mozpush.
	webpush *webpush.Service
	http    *http.Server
	mqtt    *mqttNode    // nil until buildMQTT
	debug   *http.Server // the profiler's, when --debug-addr is set
	tls     *tls.Config  // from --tls-cert and --tls-key, for HTTPS and MQTTS; nil without them

	limits *netlimit.Limiter // connection caps, shared by every listener

	httpLn net.Listener
	info   Info
	ready  atomic.Bool

	// storeHealth says why the store cannot take changes, for /readyz;
	// nil when the store has no such check.
	storeHealth func() error
	// router is this node's: the hub alone, or the hub and the bus (the
	// cluster's NATS router, then also in bus; nil on a single node).
	router router.Router
	bus    *natsrouter.Router

	metrics    *metrics.M
	metricsSrv *http.Server // with --metrics; nil otherwise

	certs *certFiles // with --tls-cert; nil otherwise
	// mqttsTLS and mqttsCerts are the MQTTS listener's own, with
	// --mqtts-cert; nil otherwise (it uses tls).
	mqttsTLS   *tls.Config
	mqttsCerts *certFiles
}

// Info is what an operator needs after start: credentials created on this
// start and every URL.
type Info struct {
	HTTPURL    string
	MQTTURL    string // mqtt://host:port; empty when --mqtt is off
	MQTTSURL   string // mqtts://host:port; empty when --mqtts is off
	MQTTWSURL  string // MQTT over WebSocket
	WSURL      string // the device WebSocket, /v1/inbox/ws
	MozPushURL string // Firefox's push service (dom.push.serverURL), /mozpush
	Store      string // "embedded (DIR)" or "postgres"
	Node       string // cluster mode: this node's name on the bus; empty on a single node
	MetricsURL string // with --metrics: where /metrics is served; empty when on the HTTP listener
	AppName    string
	AppKey     string
	AppSecret  string // set only when the default app was created on this start
	AdminToken string
	// AdminTokenNew is set when the admin token was generated on this start.
	AdminTokenNew bool
	// AdminTokenFile is where a generated admin token is kept.
	AdminTokenFile string
}

// New builds a node from cfg: it opens the store, creates the default app on
// first start and binds the listeners (so that ":0" ports are known from
// Info before Run).
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	s := &Server{cfg: cfg, log: log, hub: session.NewHub(), metrics: metrics.New(metrics.Options{PerApp: cfg.MetricsPerApp})}
	// What can refuse the start is checked before anything is created: a
	// refused start must leave the data directory as it found it (a store
	// without its token, or a default app whose master secret was never
	// shown). The TLS files and a configured admin token (flag,
	// environment or file) come first.
	var err error
	if s.tls, s.certs, err = loadTLS(cfg); err != nil {
		return nil, err
	}
	if cfg.MQTTSCert != "" {
		own := cfg
		own.TLSCert, own.TLSKey = cfg.MQTTSCert, cfg.MQTTSKey
		if s.mqttsTLS, s.mqttsCerts, err = loadTLS(own); err != nil {
			return nil, err
		}
	}
	// A kept admin token is read or generated in build, after
	// refuseLostToken has seen whether it was lost.
	if !tokenKept(cfg) {
		if err := s.adminToken(); err != nil {
			return nil, err
		}
	}
	dir, err := inspectDataDir(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	// The bus too: a cluster node that cannot reach it must not get as far
	// as creating the default app.
	if s.router, err = s.buildRouter(); err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg, log, s.metrics)
	if err != nil {
		s.closeBus()
		return nil, err
	}
	s.store, s.storeHealth = st.Store, st.health
	s.info.Store = st.desc
	if err := s.build(ctx, dir); err != nil {
		st.Close()
		s.closeBus()
		return nil, err
	}
	return s, nil
}

func (s *Server) build(ctx context.Context, dir dataDir) error {
	cfg := s.cfg
	s.reg = registry.New(s.store, time.Now, cfg.MaxTags)
	app, secret, err := s.reg.EnsureApp(ctx, cfg.DefaultAppName)
	if err != nil {
		return fmt.Errorf("default app: %w", err)
	}
	s.info.AppName, s.info.AppKey, s.info.AppSecret = app.Name, app.Key, secret
	if err := s.refuseLostToken(dir); err != nil {
		return err
	}
	if dir.tokenKept {
		if err := s.adminToken(); err != nil {
			return err
		}
	}
	if err := s.markDataDir(dir); err != nil {
		return err
	}
	s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	s.limitConnections()
	s.httpLn = s.secureHTTP(s.httpLn)
	s.info.HTTPURL = s.httpURL()
	s.info.WSURL, s.info.MozPushURL = wsURL(s.info.HTTPURL, "/v1/inbox/ws"), wsURL(s.info.HTTPURL, "/mozpush")

	limits := push.DefaultLimits()
	limits.MaxPayload, limits.MaxIDs = cfg.MaxPayload, cfg.MaxIDs
	limits.DefaultTTL, limits.MaxTTL, limits.MaxDelay = cfg.DefaultTTL, cfg.MaxTTL, cfg.MaxSchedule
	s.deliv = delivery.New(s.store, s.reg, s.router, delivery.Options{
		Limits: limits, SweepInterval: cfg.SweepInterval, ReportRetain: cfg.ReportRetain,
		SubscriptionRetain: cfg.WebPushRetain, Log: s.log, SharedPoll: sharedPoll(cfg), Metrics: s.metrics,
	})
	channels, err := s.startRelay(cfg)
	if err != nil {
		return err
	}
	// One push service for /wpush/ and /mozpush, with the limits of
	// /v1/push: the body is the payload.
	s.webpush = webpush.New(s.reg, s.deliv, webpush.Options{
		BaseURL: s.info.HTTPURL, MaxBody: cfg.MaxPayload, MaxTTL: cfg.MaxTTL, MaxSubscriptions: cfg.WebPushMaxSubscriptions,
		// A push to /wpush spends its app's push rate like one to
		// /v1/push; s.api exists by the time a push arrives.
		Admit: func(app string) error { return s.api.AdmitPushes(app, 1) },
	})
	// MQTT binds its listeners first: the registration answer tells
	// devices where to connect.
	mux := http.NewServeMux()
	if err := s.buildMQTT(mux); err != nil {
		return err
	}
	s.api = api.New(s.reg, s.deliv, api.Options{
		AdminToken: s.info.AdminToken, Backup: s.backupFunc(), MaxBody: cfg.MaxBody, MaxBatch: cfg.MaxBatch,
		RegisterRate: cfg.RegisterRate, RegisterBurst: cfg.RegisterBurst,
		AppPushRate: cfg.AppPushRate, AppPushBurst: cfg.AppPushBurst,
		Links: api.Links{HTTP: s.info.HTTPURL, MQTT: s.deviceMQTTURL(), MQTTTCP: s.info.MQTTURL, MQTTTLS: s.info.MQTTSURL,
			MQTTWS: s.info.MQTTWSURL, WS: s.info.WSURL}, WebPush: s.webpush, Channels: channels, Log: s.log,
		Sessions: s.hub, Metrics: s.metrics,
	})
	pollGW := poll.New(s.reg, s.deliv, poll.Options{
		MaxWait: cfg.LongPollMax, MaxBody: cfg.MaxBody, MaxBatch: cfg.MaxBatch, MaxBytes: cfg.PollMaxBytes,
		WriteTimeout: cfg.WriteTimeout, MaxPerDevice: cfg.MaxConnsPerDevice, Log: s.log,
	})
	s.api.Register(mux)
	pollGW.Register(mux)
	s.mountWeb(mux)
	if err := s.startDebug(); err != nil {
		return err
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("/", misses(mux))
	if err := s.startMetrics(mux); err != nil {
		return err
	}
	s.http = &http.Server{
		Handler:           withMetrics(s.metrics, withDeadlines(deviceCORS(mux), cfg.BodyTimeout, cfg.WriteTimeout)),
		ReadHeaderTimeout: cfg.HeaderTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	// Requests carry their connection's limiter ticket, which the
	// credential checks mark authenticated.
	s.http.ConnContext = netlimit.ConnContext
	// The console's live streams end when the drain begins, or the drain
	// would wait for them.
	s.http.RegisterOnShutdown(s.api.Drain)
	return nil
}

// adminToken takes the configured token (--admin-token or
// --admin-token-file), or the one generated on an earlier start, or
// generates and keeps one. A token weaker than 128 bits is refused.
func (s *Server) adminToken() error {
	tok, source := s.cfg.AdminToken, "--admin-token (or HERALD_ADMIN_TOKEN)"
	if path := s.cfg.AdminTokenFile; path != "" {
		var err error
		if tok, err = s.readAdminTokenFile(path); err != nil {
			return err
		}
		source = "--admin-token-file " + path
	}
	if tok != "" {
		if err := checkAdminToken(tok, source); err != nil {
			return err
		}
		s.info.AdminToken = tok
		return nil
	}
	path := filepath.Join(s.cfg.DataDir, "admin-token")
	s.info.AdminTokenFile = path
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		tok := strings.TrimSpace(string(b))
		if err := checkAdminToken(tok, path); err != nil {
			return err
		}
		s.info.AdminToken = tok
		return nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin token: %w", err)
	}
	s.info.AdminToken, s.info.AdminTokenNew = push.NewSecret(), true
	if err := os.WriteFile(path, []byte(s.info.AdminToken+"\n"), 0o600); err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	return nil
}

// readyz answers 200 while the node serves and its store can read and
// take changes, else 503 with the reason: a load balancer sends pushes
// elsewhere while the disk is full.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var reason error
	switch {
	case !s.ready.Load():
		reason = errors.New("not serving (starting or draining)")
	case s.storeHealth != nil && s.storeHealth() != nil:
		reason = s.storeHealth()
	case s.bus != nil && s.bus.Health() != nil:
		reason = s.bus.Health()
	}
	if reason == nil {
		if err := s.store.Ping(ctx); err != nil {
			reason = fmt.Errorf("store: reading: %w", err)
		}
	}
	if reason != nil {
		apierr.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": reason.Error()})
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Info returns the node's credentials and URLs.
func (s *Server) Info() Info { return s.info }

// Run serves until ctx ends, then drains: it stops accepting, lets requests
// in flight finish for the shutdown grace period, and closes the store.
func (s *Server) Run(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.deliv.Run(bg) })
	wg.Go(func() { s.api.Run(bg) })

	errc := make(chan error, 2)
	go func() { errc <- s.http.Serve(s.httpLn) }()
	s.serveMQTT(errc)
	s.ready.Store(true)
	s.log.Info("herald serving", "http", s.info.HTTPURL, "store", s.info.Store)
	s.warnPlaintext()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var err error
serving:
	for {
		select {
		case <-ctx.Done():
			break serving
		case err = <-errc:
			break serving
		case <-hup:
			s.reloadTLS()
		}
	}
	s.ready.Store(false)
	began := time.Now()
	step := func(what string, args ...any) {
		s.log.Info("drain: "+what, append(args, "after", time.Since(began).Round(time.Millisecond))...)
	}
	s.log.Info("drain: /readyz answers 503 from now on", "timeout", s.cfg.ShutdownGrace)
	drain, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	// Persistent connections are told the server is going away; long-polls
	// end at once with what they have; other requests finish.
	s.stopMQTT()
	sessions := s.hub.All()
	for _, sess := range sessions {
		sess.Close(session.ErrShuttingDown)
	}
	step("MQTT closed, live sessions told to go", "sessions", len(sessions))
	if shutErr := s.http.Shutdown(drain); shutErr != nil {
		s.log.Warn("drain: requests still running at the drain timeout are cut", "err", shutErr)
		s.http.Close()
	}
	step("HTTP listener closed, requests in flight finished")
	stopBG()
	wg.Wait()
	s.closeBus()
	if s.metricsSrv != nil {
		s.metricsSrv.Close()
	}
	if s.debug != nil {
		s.debug.Close()
	}
	if cerr := s.store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	step("background work stopped, store flushed and closed")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.log.Info("herald stopped")
	return err
}

// reachable turns a listener address into one a client on this machine can
// dial: an unspecified host becomes 127.0.0.1.
func reachable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
