package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// freePort returns a loopback address that was free a moment ago, for a
// flag whose bound address the banner does not print in a form startServer
// reads.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestClientOverEveryMQTTListener: the public client receives a waiting
// and a live push through the binary's three MQTT listeners (TCP, TLS with
// certificate files, WebSocket at /mqtt), acknowledging each so that the
// inbox is empty afterwards. The certificate makes the HTTP listener HTTPS
// too, so every call trusts it and MQTT over WebSocket is wss.
func TestClientOverEveryMQTTListener(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	mqtts := freePort(t)
	srv := startServer(t, filepath.Join(dir, "data"), "--mqtt", "127.0.0.1:0", "--mqtts", mqtts,
		"--tls-cert", certFile, "--tls-key", keyFile)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tr := range []struct {
		name string
		url  func(reg *client.Registration) string
	}{
		{"tcp", func(*client.Registration) string { return srv.MQTTURL }},
		{"tls", func(reg *client.Registration) string { return reg.MQTTURL }},
		{"websocket", func(*client.Registration) string { return "wss" + strings.TrimPrefix(srv.URL, "https") + "/mqtt" }},
	} {
		t.Run(tr.name, func(t *testing.T) {
			reg, err := client.Register(ctx, hc, srv.URL, client.RegisterRequest{AppKey: srv.AppKey, Platform: "android"})
			if err != nil {
				t.Fatal(err)
			}
			if reg.MQTTURL != "mqtts://"+mqtts {
				t.Fatalf("the registration answer gave MQTT URL %q, want the TLS listener mqtts://%s", reg.MQTTURL, mqtts)
			}
			push := func(text string) string {
				id, status := srv.pushVia(t, hc, fmt.Sprintf(`{"audience":{"registration_id":[%q]},"message":{"text":%q}}`, reg.RegistrationID, text))
				if status != http.StatusAccepted {
					t.Fatalf("push: status %d", status)
				}
				return id
			}
			waiting := push("waiting")
			var got []string
			live := ""
			dev := client.NewDevice(*reg, hc)
			err = dev.ListenMQTT(ctx, tr.url(reg), func(m client.Message) error {
				got = append(got, m.ID)
				if len(got) == 1 {
					live = push("live")
					return nil
				}
				return client.ErrStop
			})
			if err != nil {
				t.Fatalf("ListenMQTT over %s: %v", tr.url(reg), err)
			}
			if len(got) != 2 || got[0] != waiting || got[1] != live {
				t.Errorf("got %v, want [%s %s]", got, waiting, live)
			}
			// PUBACKs are acknowledgements: nothing is left to poll.
			deadline := time.Now().Add(10 * time.Second)
			for {
				msgs, err := dev.Poll(ctx, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(msgs) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d messages still in the inbox after their PUBACKs", len(msgs))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
