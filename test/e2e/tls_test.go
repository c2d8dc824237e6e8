package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

// pushVia is server.push through hc, for a server that speaks HTTPS.
func (s *server) pushVia(t *testing.T, hc *http.Client, body string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+"/v1/push", strings.NewReader(body))
	req.SetBasicAuth(s.AppKey, s.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		MsgID string `json:"msg_id"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return out.MsgID, resp.StatusCode
}

// testCA makes a certificate authority and a server certificate it signed
// for 127.0.0.1 in dir, and returns the PEM files and a pool of the CA.
func testCA(t *testing.T, dir string) (caFile, certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald e2e CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, b := range map[string]*pem.Block{
		caFile: {Type: "CERTIFICATE", Bytes: caDER}, certFile: {Type: "CERTIFICATE", Bytes: leafDER},
		keyFile: {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return caFile, certFile, keyFile, pool
}

// TestCLIOverHTTPS: with --tls-cert and --tls-key the binary serves HTTPS,
// and the CLI works against it trusting the CA through SSL_CERT_FILE, with
// verification on: `herald listen` registers over HTTPS and receives over
// MQTTS (the registration answer's MQTT URL), `herald send` pushes, and
// `herald report` reads the delivery. A CLI that does not trust the CA is
// refused.
func TestCLIOverHTTPS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile, pool := testCA(t, dir)
	srv := startServer(t, filepath.Join(dir, "data"), "--mqtts", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("the banner gives %q, want https://127.0.0.1:port", srv.URL)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := hc.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("/healthz over %s, want HTTP/2", resp.Proto)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env := []string{"SSL_CERT_FILE=" + caFile, "HERALD_SERVER=" + srv.URL,
		"HERALD_APP_KEY=" + srv.AppKey, "HERALD_MASTER_SECRET=" + srv.Secret}
	listen := exec.CommandContext(ctx, heraldtest.Bin(), "listen", "--state", filepath.Join(t.TempDir(), "device.json"), "--count", "1")
	listen.Env = append(os.Environ(), env...)
	var listenOut strings.Builder
	listen.Stdout = &listenOut
	listenErr, _ := listen.StderrPipe()
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(listenErr).ReadString('\n')
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "listening" || !strings.Contains(line, "MQTT mqtts://") {
		t.Fatalf("listen said %q, want listening ... over MQTT mqtts://", line)
	}
	go io.Copy(io.Discard, listenErr)

	out, err := herald(t, ctx, env, "send", "--json", "--to", f[2], "--title", "over https")
	if err != nil {
		t.Fatal(err)
	}
	var sent struct {
		MsgID string `json:"msg_id"`
	}
	if err := json.Unmarshal([]byte(out), &sent); err != nil || sent.MsgID == "" {
		t.Fatalf("send printed %q", out)
	}
	if err := listen.Wait(); err != nil {
		t.Fatalf("listen: %v", err)
	}
	var got client.Message
	if err := json.Unmarshal([]byte(listenOut.String()), &got); err != nil || got.ID != sent.MsgID {
		t.Fatalf("listen printed %q, want message %s", listenOut.String(), sent.MsgID)
	}
	// The delivery is recorded once the PUBACK is in; poll for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err = herald(t, ctx, env, "report", sent.MsgID)
		if err == nil && strings.Contains(out, `"delivered": 1,`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("report over HTTPS: %q %v", out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Verification is on: another CA's file does not vouch for this server.
	otherCA, _, _, _ := testCA(t, t.TempDir())
	_, err = herald(t, ctx, []string{"SSL_CERT_FILE=" + otherCA, "HERALD_SERVER=" + srv.URL,
		"HERALD_APP_KEY=" + srv.AppKey, "HERALD_MASTER_SECRET=" + srv.Secret}, "send", "--all", "--body", "x")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("send trusting another CA: %v, want a certificate error", err)
	}
}

// cmdline is what ps shows of a process.
func cmdline(t *testing.T, pid int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	return strings.ReplaceAll(string(raw), "\x00", " ")
}

// adminCall creates an app with token and returns the status.
func adminCall(t *testing.T, srv *server, token, name string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/v1/apps", strings.NewReader(`{"name":"`+name+`"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

const cmdlineWarning = "--admin-token on the command line"

// logAfterStart is the server's log up to its "herald serving" line, which
// follows every warning of the start: stderr is read apart from the banner
// on stdout, so it may lag behind it.
func logAfterStart(t *testing.T, srv *server) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if log := srv.Log.String(); strings.Contains(log, "herald serving") {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("no \"herald serving\" in the log: %s", srv.Log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAdminTokenSources: the admin token from HERALD_ADMIN_TOKEN or
// --admin-token-file works and stays out of ps; on the command line it
// works with a warning; a weak one stops the server with how to make one.
func TestAdminTokenSources(t *testing.T) {
	token := "0123456789abcdef0123456789abcdef" // 32 hex characters: 128 bits

	t.Run("environment", func(t *testing.T) {
		t.Setenv("HERALD_ADMIN_TOKEN", token)
		srv := startServer(t, t.TempDir())
		if strings.Contains(cmdline(t, srv.PID()), token) {
			t.Error("the admin token shows in ps")
		}
		if status := adminCall(t, srv, token, "from-env"); status != http.StatusCreated {
			t.Errorf("admin call with the token from the environment: %d", status)
		}
		if log := logAfterStart(t, srv); strings.Contains(log, cmdlineWarning) {
			t.Errorf("a token from the environment was warned about: %s", log)
		}
	})

	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token")
		os.WriteFile(path, []byte(token+"\n"), 0o600)
		srv := startServer(t, t.TempDir(), "--admin-token-file", path)
		if strings.Contains(cmdline(t, srv.PID()), token) {
			t.Error("the admin token shows in ps")
		}
		if status := adminCall(t, srv, token, "from-file"); status != http.StatusCreated {
			t.Errorf("admin call with the token from the file: %d", status)
		}
		if log := logAfterStart(t, srv); strings.Contains(log, "WARN") {
			t.Errorf("a private token file was warned about: %s", log)
		}
		srv.Stop()

		os.Chmod(path, 0o644)
		srv = startServer(t, t.TempDir(), "--admin-token-file", path)
		if log := logAfterStart(t, srv); !strings.Contains(log, "chmod 600") {
			t.Errorf("a token file others may read was not warned about: %s", log)
		}
	})

	t.Run("command line", func(t *testing.T) {
		srv := startServer(t, t.TempDir(), "--admin-token", token)
		if status := adminCall(t, srv, token, "from-flag"); status != http.StatusCreated {
			t.Errorf("admin call with the token from the flag: %d", status)
		}
		if log := logAfterStart(t, srv); !strings.Contains(log, cmdlineWarning) {
			t.Errorf("no warning for a token on the command line: %s", log)
		}
	})

	t.Run("weak", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		data := t.TempDir()
		cmd := exec.CommandContext(ctx, heraldtest.Bin(), "serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "")
		cmd.Env = append(os.Environ(), "HERALD_ADMIN_TOKEN=secret123")
		out, err := cmd.CombinedOutput()
		if err == nil || ctx.Err() != nil {
			t.Fatalf("serve with a weak admin token: %v (%s)", err, out)
		}
		if !strings.Contains(string(out), "openssl rand -hex 16") {
			t.Errorf("the refusal does not say how to make a token: %s", out)
		}
		// The refused start created nothing: the next one creates the
		// default app and shows its master secret.
		if srv := startServer(t, data); srv.Secret == "" {
			t.Error("a start refused for its admin token had already created the default app, whose secret is now lost")
		}
	})
}

// TestAppPushRateFlags: --app-push-rate and --app-push-burst reach the
// limit: past the burst a push is answered 429 with Retry-After.
func TestAppPushRateFlags(t *testing.T) {
	srv := startServer(t, t.TempDir(), "--app-push-rate", "0.2", "--app-push-burst", "2", "--max-batch", "2")
	body := `{"audience":"all","message":{"n":1}}`
	for i := range 2 {
		if _, status := srv.push(t, body); status != http.StatusAccepted {
			t.Fatalf("push %d within the burst: %d", i, status)
		}
	}
	req, _ := http.NewRequest("POST", srv.URL+"/v1/push", strings.NewReader(body))
	req.SetBasicAuth(srv.AppKey, srv.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// One push at 0.2 a second is 5 s away, less what refilled since the
	// first push (well under 3 s even on a loaded machine).
	if ra := resp.Header.Get("Retry-After"); resp.StatusCode != http.StatusTooManyRequests || ra < "3" || ra > "5" || len(ra) != 1 {
		t.Errorf("past the burst: %d with Retry-After %q, want 429 and 3 to 5", resp.StatusCode, ra)
	}
}
