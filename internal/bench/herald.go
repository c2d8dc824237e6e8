package bench

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// herald is a Herald node under test: one the bench started (proc set) or
// an external one.
type herald struct {
	proc    *process // nil for an external server
	pidv    int
	base    string // HTTP base URL
	mqtt    netip.AddrPort
	hc      *http.Client
	cache   *regCache
	path    string // of the cache file
	workers int    // concurrent registrations
	lastMsg string // msg_id of the last broadcast
	ttl     int    // of a broadcast, in seconds; 30 when zero
	log     io.Writer
}

// regCache is what a rerun needs to skip registering: the app and its
// devices. It is kept in a file under Options.Dir.
type regCache struct {
	AdminToken   string         `json:"admin_token,omitempty"` // of the spawned server
	Server       string         `json:"server,omitempty"`      // of an external server
	AppKey       string         `json:"app_key"`
	MasterSecret string         `json:"master_secret"`
	Devices      []cachedDevice `json:"devices"`
}

type cachedDevice struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: 30 * time.Second},
	}
}

// startHerald starts `herald serve` on free ports with the data directory
// kept in o.Dir, or attaches to the external server of o.Server. It fails
// with ErrNoMQTT when the server has no MQTT listener.
func startHerald(ctx context.Context, o *Options) (*herald, error) {
	h := &herald{hc: newHTTPClient(o.Register), workers: o.Register, log: o.Log}
	if o.Server != "" {
		return h, h.attach(o)
	}
	if err := h.spawn(ctx, o); err != nil {
		return nil, err
	}
	// The listener is bound before the node reports ready, so a refused
	// connection now means there is none.
	if err := waitDial(h.mqtt.String(), 2*time.Second, h.proc); err != nil {
		h.stop()
		return nil, fmt.Errorf("%w (herald serve --mqtt %s: %v)", ErrNoMQTT, h.mqtt, err)
	}
	return h, nil
}

// spawn starts the server, waits until it is ready, and makes sure the
// cached app exists on it. The connection caps stay at their defaults, so
// that the figures are those of the server as it ships: the swarm spreads
// its devices over 253 source addresses (swarm_linux.go), about 76 each for
// 19,000, far below --max-conns-per-addr, and keeps at most InFlight
// handshakes unauthenticated at once.
func (h *herald) spawn(ctx context.Context, o *Options) error {
	h.path = filepath.Join(o.Dir, "herald-devices.json")
	h.cache = loadCache(h.path)
	if h.cache.AdminToken == "" {
		h.cache.AdminToken = randomHex(16)
		h.cache.AppKey, h.cache.MasterSecret, h.cache.Devices = "", "", nil
		if err := h.save(); err != nil {
			return err
		}
	}
	httpPort, err := freePort()
	if err != nil {
		return err
	}
	mqttPort, err := freePort()
	if err != nil {
		return err
	}
	bin := o.HeraldBin
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return err
		}
	}
	h.base = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	h.mqtt = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(mqttPort))
	// The admin token goes in the environment, out of ps; the push rate
	// is raised so that the per-app limit never shapes a figure (a later
	// --app-push-rate in ServeArgs still wins).
	data := filepath.Join(o.Dir, "herald-data")
	args := []string{"serve", "--data", data,
		"--http", fmt.Sprintf("127.0.0.1:%d", httpPort), "--mqtt", h.mqtt.String(),
		"--app-push-rate", "1e9", "--app-push-burst", "1000000000", "--log-level", "warn"}
	if entries, err := os.ReadDir(data); err != nil || len(entries) == 0 {
		args = append(args, "--init") // the first run; later ones reuse the store and its devices
	}
	args = append(args, o.ServeArgs...)
	env := append([]string{"HERALD_ADMIN_TOKEN=" + h.cache.AdminToken}, o.ServeEnv...)
	h.proc, err = startProcess(bin, args, env, o.ServerCPUs, filepath.Join(o.Dir, "herald-serve.log"))
	if err != nil {
		return err
	}
	h.pidv = h.proc.pid()
	if err := h.waitReady(ctx, time.Minute); err != nil {
		h.stop()
		return err
	}
	if err := h.ensureApp(ctx); err != nil {
		h.stop()
		return err
	}
	return nil
}

// attach uses the external server of o.
func (h *herald) attach(o *Options) error {
	if o.AppKey == "" || o.MasterSecret == "" {
		return errors.New("bench: an external Herald (--server) needs --app-key and --master-secret")
	}
	if o.MQTTAddr == "" {
		return errors.New("bench: an external Herald (--server) needs its MQTT address (--mqtt)")
	}
	ap, err := netip.ParseAddrPort(o.MQTTAddr)
	if err != nil {
		addrs, lerr := net.LookupHost(strings.Split(o.MQTTAddr, ":")[0])
		_, port, _ := net.SplitHostPort(o.MQTTAddr)
		if lerr != nil || len(addrs) == 0 {
			return fmt.Errorf("bench: --mqtt %q: %v", o.MQTTAddr, err)
		}
		if ap, err = netip.ParseAddrPort(net.JoinHostPort(addrs[0], port)); err != nil {
			return fmt.Errorf("bench: --mqtt %q: %v", o.MQTTAddr, err)
		}
	}
	h.base, h.mqtt, h.pidv = strings.TrimRight(o.Server, "/"), ap, o.ServerPID
	sum := sha256.Sum256([]byte(h.base + "\n" + o.AppKey))
	h.path = filepath.Join(o.Dir, "herald-devices-"+hex.EncodeToString(sum[:4])+".json")
	h.cache = loadCache(h.path)
	if h.cache.AppKey != o.AppKey || h.cache.MasterSecret != o.MasterSecret {
		h.cache = &regCache{Server: h.base, AppKey: o.AppKey, MasterSecret: o.MasterSecret}
	}
	if err := waitDial(h.mqtt.String(), 2*time.Second, nil); err != nil {
		return fmt.Errorf("%w at %s: %v", ErrNoMQTT, h.mqtt, err)
	}
	return nil
}

func (h *herald) name() string             { return "Herald" }
func (h *herald) pid() int                 { return h.pidv }
func (h *herald) mqttAddr() netip.AddrPort { return h.mqtt }

func (h *herald) stop() error {
	h.hc.CloseIdleConnections()
	if h.proc == nil {
		return nil
	}
	return h.proc.stop(20 * time.Second)
}

func (h *herald) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", h.base+"/readyz", nil)
		resp, err := h.hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if h.proc.exited() {
			return fmt.Errorf("bench: herald serve exited: %v%s", h.proc.err, h.proc.tail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: herald serve not ready after %v: %v%s", d, err, h.proc.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ensureApp checks that the cached app and devices still exist on the
// spawned server (its data directory may have been removed) and creates a
// fresh app with the admin token when they do not.
func (h *herald) ensureApp(ctx context.Context) error {
	if h.cache.AppKey != "" {
		probe := "bench-probe"
		if len(h.cache.Devices) > 0 {
			probe = h.cache.Devices[len(h.cache.Devices)-1].ID
		}
		status, err := h.call(ctx, "GET", "/v1/devices/"+url.PathEscape(probe), h.providerAuth, nil, nil)
		switch {
		case err == nil || status == http.StatusNotFound && len(h.cache.Devices) == 0:
			return nil
		case status == http.StatusNotFound:
			fmt.Fprintf(h.log, "herald: the cached devices are gone from the server; registering again\n")
			h.cache.Devices = nil
			return h.save()
		case status != http.StatusUnauthorized && status != http.StatusForbidden:
			return fmt.Errorf("bench: checking the cached app: %w", err)
		}
	}
	var out struct {
		AppKey       string `json:"app_key"`
		MasterSecret string `json:"master_secret"`
	}
	admin := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+h.cache.AdminToken) }
	if _, err := h.call(ctx, "POST", "/v1/apps", admin, map[string]string{"name": "bench"}, &out); err != nil {
		return fmt.Errorf("bench: creating the bench app: %w", err)
	}
	h.cache.AppKey, h.cache.MasterSecret, h.cache.Devices = out.AppKey, out.MasterSecret, nil
	return h.save()
}

func (h *herald) providerAuth(r *http.Request) { r.SetBasicAuth(h.cache.AppKey, h.cache.MasterSecret) }

// call sends one API call and decodes a 2xx answer into out. It returns
// the status, and an error for anything but 2xx.
func (h *herald) call(ctx context.Context, method, path string, auth func(*http.Request), in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != nil {
		auth(req)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// devices registers what the cache lacks of n devices, concurrently and
// with the master secret (which exempts the calls from the per-address
// rate limit), and returns n identities.
func (h *herald) devices(ctx context.Context, n int, workload string) ([]Device, error) {
	if missing := n - len(h.cache.Devices); missing > 0 {
		start := time.Now()
		fresh := make([]cachedDevice, missing)
		var next atomic.Int64
		var wg sync.WaitGroup
		var errOnce sync.Once
		var firstErr error
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for range h.workers {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= missing || ctx.Err() != nil {
						return
					}
					var out struct {
						RegistrationID string `json:"registration_id"`
						DeviceSecret   string `json:"device_secret"`
					}
					req := map[string]string{"app_key": h.cache.AppKey, "platform": "other"}
					if _, err := h.call(ctx, "POST", "/v1/devices", h.providerAuth, req, &out); err != nil {
						errOnce.Do(func() { firstErr = err; cancel() })
						return
					}
					fresh[i] = cachedDevice{ID: out.RegistrationID, Secret: out.DeviceSecret}
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			return nil, fmt.Errorf("bench: registering devices: %w", firstErr)
		}
		h.cache.Devices = append(h.cache.Devices, fresh...)
		if err := h.save(); err != nil {
			return nil, err
		}
		el := time.Since(start)
		fmt.Fprintf(h.log, "herald: registered %d devices in %v (%.0f/s), cached in %s\n",
			missing, el.Round(time.Millisecond), float64(missing)/el.Seconds(), h.path)
	}
	out := make([]Device, n)
	for i, d := range h.cache.Devices[:n] {
		out[i] = Device{ClientID: d.ID, Username: d.ID, Password: d.Secret, Topic: "devices/" + d.ID}
	}
	return out, nil
}

// broadcast pushes one notification carrying nonce to every device of the
// app. It returns when the request was sent and how long the API took to
// accept it.
func (h *herald) broadcast(ctx context.Context, nonce string) (sent time.Time, accept time.Duration, err error) {
	body := map[string]any{
		"audience":     "all",
		"notification": map[string]string{"title": "herald bench", "body": nonce},
		// A TTL keeps it a durable broadcast, as a real one is, yet short
		// so devices beyond N in the cache do not keep it for long.
		"options": map[string]any{"ttl": cmp.Or(h.ttl, 30)},
	}
	var out struct {
		MsgID string `json:"msg_id"`
	}
	sent = time.Now()
	if _, err := h.call(ctx, "POST", "/v1/push", h.providerAuth, body, &out); err != nil {
		return sent, 0, err
	}
	h.lastMsg = out.MsgID
	return sent, time.Since(sent), nil
}

// deliveryNote reads the delivery report of the last broadcast: the
// acknowledgements the devices sent must all have been counted.
func (h *herald) deliveryNote(ctx context.Context) string {
	var out struct {
		State     string `json:"state"`
		Targeted  int    `json:"targeted"`
		Delivered int    `json:"delivered"`
		Pending   int    `json:"pending"`
	}
	if _, err := h.call(ctx, "GET", "/v1/messages/"+url.PathEscape(h.lastMsg), h.providerAuth, nil, &out); err != nil {
		return "delivery report: " + err.Error()
	}
	return fmt.Sprintf("delivery report of %s: %s, %d delivered, %d pending, %d targeted",
		h.lastMsg, out.State, out.Delivered, out.Pending, out.Targeted)
}

func loadCache(path string) *regCache {
	var c regCache
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &c)
	}
	return &c
}

// save writes the cache through a temporary file, so that an interrupted
// run never leaves half a file behind.
func (h *herald) save() error {
	b, err := json.Marshal(h.cache)
	if err != nil {
		return err
	}
	tmp := h.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, h.path)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
