package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/heraldpush/herald/client"
)

// testPKI is a certificate authority made for one test and a server
// certificate it signed for 127.0.0.1, written as PEM files.
type testPKI struct {
	CAFile, CertFile, KeyFile string
	Pool                      *x509.CertPool // trusts the CA alone
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile: filepath.Join(dir, "key.pem"), Pool: x509.NewCertPool()}
	p.Pool.AddCert(ca)
	for path, block := range map[string]*pem.Block{
		p.CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
		p.CertFile: {Type: "CERTIFICATE", Bytes: leafDER},
		p.KeyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// client is an HTTPS client that trusts the test CA and offers HTTP/2
// (a Transport with its own TLS settings does not unless told).
func (p *testPKI) client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Pool}, ForceAttemptHTTP2: true}}
}

func startTLSNode(t *testing.T) (*node, *testPKI) {
	pki := newTestPKI(t)
	cfg := testConfig(t)
	cfg.TLSCert, cfg.TLSKey = pki.CertFile, pki.KeyFile
	n := startNode(t, cfg)
	n.hc = pki.client()
	return n, pki
}

// TestHTTPSServesTheAPI: with --tls-cert and --tls-key the HTTP listener
// speaks HTTPS, HTTP/2 where the client offers it, and every URL the node
// hands out says so; a device registers, is pushed to and polls over TLS.
func TestHTTPSServesTheAPI(t *testing.T) {
	n, pki := startTLSNode(t)
	host := strings.TrimPrefix(n.info.HTTPURL, "https://")
	if !strings.HasPrefix(n.info.HTTPURL, "https://127.0.0.1:") {
		t.Fatalf("HTTPURL %q, want https://127.0.0.1:port", n.info.HTTPURL)
	}
	for name, got := range map[string]string{
		"MQTTWSURL": n.info.MQTTWSURL, "WSURL": n.info.WSURL, "MozPushURL": n.info.MozPushURL,
	} {
		if !strings.HasPrefix(got, "wss://"+host+"/") {
			t.Errorf("%s %q, want wss://%s/...", name, got, host)
		}
	}

	resp, err := n.hc.Get(n.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" {
		t.Errorf("GET /healthz over %s (ALPN %q), want HTTP/2", resp.Proto, resp.TLS.NegotiatedProtocol)
	}

	var reg struct {
		client.Registration
		Connect struct{ Inbox, Ack string }
	}
	status, code := n.call("POST", "/v1/devices", nil, map[string]any{"app_key": n.info.AppKey, "platform": "web"}, &reg)
	if status != http.StatusCreated {
		t.Fatalf("register over HTTPS: %d %s", status, code)
	}
	if reg.Connect.Inbox != n.url+"/v1/inbox" || reg.Connect.Ack != n.url+"/v1/inbox/ack" {
		t.Errorf("the registration answer links to %q and %q, want them under %s", reg.Connect.Inbox, reg.Connect.Ack, n.url)
	}
	reg.Server = n.url
	id := n.pushTo(&reg.Registration, "over https")
	dev := client.NewDevice(reg.Registration, n.hc)
	msgs, err := dev.Poll(context.Background(), 0)
	if err != nil || len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("poll over HTTPS: %v %v, want %s", msgs, err, id)
	}
	if err := dev.Ack(context.Background(), id); err != nil {
		t.Fatal(err)
	}

	var sub struct{ Endpoint string }
	if status, code := n.call("POST", "/v1/webpush/subscriptions", deviceAuth(&reg.Registration), nil, &sub); status != http.StatusCreated {
		t.Fatalf("web push subscription: %d %s", status, code)
	}
	if !strings.HasPrefix(sub.Endpoint, n.url+"/wpush/") {
		t.Errorf("web push endpoint %q, want it under %s/wpush/", sub.Endpoint, n.url)
	}

	// TLS 1.2 is the floor, as on the MQTTS listener.
	old := &tls.Config{RootCAs: pki.Pool, MaxVersion: tls.VersionTLS11}
	if c, err := tls.Dial("tcp", host, old); err == nil {
		c.Close()
		t.Error("a TLS 1.1 client got a session")
	}
}

// TestMQTTOverWSSOnTheHTTPSListener: /mqtt on the HTTPS listener is MQTT
// over wss, for a standard MQTT client and for Herald's own.
func TestMQTTOverWSSOnTheHTTPSListener(t *testing.T) {
	n, pki := startTLSNode(t)
	dev := n.register("")
	id := n.pushTo(dev, "over wss")

	opts := paho3.NewClientOptions().AddBroker(n.info.MQTTWSURL).SetClientID(dev.RegistrationID).
		SetUsername(dev.RegistrationID).SetPassword(dev.DeviceSecret).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetTLSConfig(&tls.Config{RootCAs: pki.Pool})
	c := paho3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho over %s: %v", n.info.MQTTWSURL, tok.Error())
	}
	got := newReceived()
	c.Subscribe("devices/"+dev.RegistrationID, 1, func(_ paho3.Client, m paho3.Message) { got.add(m.Payload()) }).WaitTimeout(5 * time.Second)
	if ids := got.wait(t, 1); ids[0] != id {
		t.Errorf("paho over wss got %v, want %s", ids, id)
	}
	c.Disconnect(100)

	// Herald's client, with the HTTP client that trusts the CA.
	second := n.pushTo(dev, "again over wss")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen []string
	err := client.NewDevice(*dev, n.hc).ListenMQTT(ctx, n.info.MQTTWSURL, func(m client.Message) error {
		seen = append(seen, m.ID)
		if m.ID == second {
			return client.ErrStop
		}
		return nil
	})
	if err != nil || len(seen) == 0 || seen[len(seen)-1] != second {
		t.Errorf("client.ListenMQTT over wss: %v, got %v, want %s last", err, seen, second)
	}
}

// TestPlainHTTPToTheHTTPSListener: a client that speaks plain HTTP to the
// TLS port gets a 400 from the TLS layer and nothing else: its request is
// never served, so no secret comes back in clear and nothing is stored.
func TestPlainHTTPToTheHTTPSListener(t *testing.T) {
	n, _ := startTLSNode(t)
	host := strings.TrimPrefix(n.url, "https://")
	plain := "http://" + host

	req, _ := http.NewRequest("POST", plain+"/v1/devices",
		strings.NewReader(`{"app_key":"`+n.info.AppKey+`","platform":"web","alias":"cleartext"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP registration answered %d, want 400", resp.StatusCode)
		}
		if strings.Contains(string(body), "device_secret") || strings.Contains(string(body), "registration_id") {
			t.Errorf("plain HTTP registration answered in clear with %q", body)
		}
	}
	// The same by hand, byte for byte: the answer is the TLS layer's.
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("reading the answer to plain HTTP: %v", err)
	}
	if !strings.Contains(status, "400") {
		t.Errorf("plain HTTP to the TLS port answered %q, want a 400", status)
	}

	// Nothing was registered: the alias names no device.
	var out struct{ Devices []any }
	if status, code := n.call("GET", "/v1/aliases/cleartext", n.provider(), nil, &out); status != http.StatusOK || len(out.Devices) != 0 {
		t.Errorf("after a plain HTTP registration the alias has %d devices (%d %s), want none", len(out.Devices), status, code)
	}
}

// TestUnusableCertificateStopsTheStart: a certificate that cannot be
// loaded stops the start rather than leaving the listener plaintext.
func TestUnusableCertificateStopsTheStart(t *testing.T) {
	pki := newTestPKI(t)
	cfg := testConfig(t)
	cfg.TLSCert, cfg.TLSKey = pki.CertFile, pki.CAFile // a certificate is no key
	if _, _, err := startWithLog(t, cfg); !errors.Is(err, ErrTLS) {
		t.Errorf("New with a certificate as the key: %v, want ErrTLS", err)
	}
}
