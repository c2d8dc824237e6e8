//go:build linux

package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The relay workload: Herald relays N notifications to APNs and to FCM,
// both played by servers in the bench process that answer at once, then to
// an APNs that takes SlowVendor to answer each. It reports notifications
// per second from the first push request to the vendor's last receipt, and
// the server's CPU per notification.

// SlowVendor is how long the slow APNs of the relay workload takes to
// answer each notification.
const SlowVendor = 50 * time.Millisecond

// vendorServer plays APNs, Google's token endpoint and FCM over TLS with
// HTTP/2, counting what it is sent.
type vendorServer struct {
	srv      *http.Server
	ln       net.Listener
	url      string
	certFile string
	apns     atomic.Int64
	fcm      atomic.Int64
	delay    atomic.Int64 // nanoseconds each APNs answer waits
}

func startVendors(dir string) (*vendorServer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald bench vendors"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	v := &vendorServer{certFile: filepath.Join(dir, "bench-vendors.pem")}
	if err := os.WriteFile(v.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if v.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	v.url = "https://" + v.ln.Addr().String()
	v.srv = &http.Server{
		Handler:   http.HandlerFunc(v.serve),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"h2", "http/1.1"}},
	}
	go v.srv.ServeTLS(v.ln, "", "")
	return v, nil
}

func (v *vendorServer) close() { v.srv.Close() }

func (v *vendorServer) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/3/device/"):
		if d := time.Duration(v.delay.Load()); d > 0 {
			time.Sleep(d)
		}
		v.apns.Add(1)
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/token":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"bench","token_type":"Bearer","expires_in":3600}`))
	case strings.HasSuffix(r.URL.Path, "/messages:send"):
		v.fcm.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name":"projects/bench/messages/1"}`))
	default:
		http.NotFound(w, r)
	}
}

// relay runs the relay workload against a Herald the bench starts.
func runRelay(ctx context.Context, o *Options) (Result, error) {
	v, err := startVendors(o.Dir)
	if err != nil {
		return Result{}, err
	}
	defer v.close()
	ro := *o
	ro.ServeEnv = append(append([]string(nil), o.ServeEnv...), "SSL_CERT_FILE="+v.certFile)
	// A fresh store each run: the devices and relay jobs of the last one
	// are not this one's.
	os.RemoveAll(filepath.Join(o.Dir, "herald-data"))
	os.Remove(filepath.Join(o.Dir, "herald-devices.json"))
	h, err := startHerald(ctx, &ro)
	if err != nil {
		return Result{}, err
	}
	defer h.stop()
	if err := h.relayChannels(ctx, v); err != nil {
		return Result{}, err
	}
	devs := min(o.N, relayDevices)
	apnsIDs, err := h.relayRegister(ctx, devs, "ios", func() map[string]string { return map[string]string{"apns_token": randomHex(32)} })
	if err != nil {
		return Result{}, err
	}
	fcmIDs, err := h.relayRegister(ctx, devs, "android", func() map[string]string { return map[string]string{"fcm_token": "bench-" + randomHex(40)} })
	if err != nil {
		return Result{}, err
	}
	r := Result{Metrics: Metrics{}}
	for _, phase := range []struct {
		name  string
		ids   []string
		count *atomic.Int64
		delay time.Duration
	}{
		{"apns", apnsIDs, &v.apns, 0},
		{"fcm", fcmIDs, &v.fcm, 0},
		{"apns_slow", apnsIDs, &v.apns, SlowVendor},
	} {
		v.delay.Store(int64(phase.delay))
		rate, cpu, vendorCPU, err := h.relayPhase(ctx, o, phase.ids, phase.count)
		if err != nil {
			return r, fmt.Errorf("%s: %w", phase.name, err)
		}
		r.Metrics[phase.name+"_per_s"], r.Metrics[phase.name+"_cpu_us"], r.Metrics[phase.name+"_vendor_cpu_us"] = rate, cpu, vendorCPU
		fmt.Fprintf(o.Log, "herald: relay %s: %.0f notifications/s, %.1f µs CPU each (the bench's vendor: %.1f µs)\n", phase.name, rate, cpu, vendorCPU)
	}
	r.Metrics["notifications"] = float64(o.N)
	return r, nil
}

// relayChannels gives the app APNs and FCM settings that point at v.
func (h *herald) relayChannels(ctx context.Context, v *vendorServer) error {
	apnsKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, _ := x509.MarshalPKCS8PrivateKey(apnsKey)
	base := "/v1/apps/" + h.cache.AppKey + "/channels/"
	_, err = h.call(ctx, "PUT", base+"apns", h.providerAuth, map[string]any{
		"key_p8": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "key_id": "BENCHKEY01", "team_id": "BENCHTEAM1",
		"topic": "com.example.bench", "environment": "production", "endpoint": v.url,
	}, nil)
	if err != nil {
		return err
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	rder, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	_, err = h.call(ctx, "PUT", base+"fcm", h.providerAuth, map[string]any{
		"service_account": map[string]any{
			"type": "service_account", "project_id": "bench", "private_key_id": "k1",
			"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rder})),
			"client_email": "bench@bench.iam.gserviceaccount.com", "client_id": "1", "token_uri": v.url + "/token",
		},
		"endpoint": v.url,
	}, nil)
	return err
}

// relayRegister registers n devices on platform with the channel fields
// channel makes.
func (h *herald) relayRegister(ctx context.Context, n int, platform string, channel func() map[string]string) ([]string, error) {
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, h.workers)
	for range h.workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				req := channel()
				req["app_key"], req["platform"] = h.cache.AppKey, platform
				var out struct {
					RegistrationID string `json:"registration_id"`
				}
				if _, err := h.call(ctx, "POST", "/v1/devices", h.providerAuth, req, &out); err != nil {
					errs <- err
					return
				}
				ids[i] = out.RegistrationID
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, fmt.Errorf("bench: registering devices: %w", err)
	default:
	}
	return ids, nil
}

// relayPhase pushes o.N notifications over ids (one push names them all,
// as often as it takes) and waits until the vendor counted them: the rate
// from the first request to the last receipt, and the server's CPU per
// notification over the same span, and the bench process's own (its
// vendor server's, mostly): the two share the machine's cores.
func (h *herald) relayPhase(ctx context.Context, o *Options, ids []string, count *atomic.Int64) (rate, cpuUS, vendorUS float64, err error) {
	before := count.Load()
	cpu0, err := readCPU(h.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	self0, err := readCPU(os.Getpid())
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	sent := 0
	for sent < o.N {
		batch := ids[:min(len(ids), o.N-sent)]
		_, err := h.call(ctx, "POST", "/v1/push", h.providerAuth, map[string]any{
			"audience":     map[string]any{"registration_id": batch},
			"notification": map[string]any{"title": "bench", "body": "relay " + hex.EncodeToString([]byte{byte(sent)})},
		}, nil)
		if err != nil {
			return 0, 0, 0, err
		}
		sent += len(batch)
	}
	deadline := time.Now().Add(o.Timeout)
	for count.Load()-before < int64(o.N) {
		if time.Now().After(deadline) {
			return 0, 0, 0, fmt.Errorf("bench: the vendor got %d of %d notifications in %v", count.Load()-before, o.N, o.Timeout)
		}
		if ctx.Err() != nil {
			return 0, 0, 0, ctx.Err()
		}
		time.Sleep(2 * time.Millisecond)
	}
	el := time.Since(start)
	cpu1, err := readCPU(h.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	self1, err := readCPU(os.Getpid())
	if err != nil {
		return 0, 0, 0, err
	}
	perN := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(o.N) }
	return float64(o.N) / el.Seconds(), perN(cpu1 - cpu0), perN(self1 - self0), nil
}

var errNoRelay = errors.New("bench: relay needs the bench to start Herald itself")
