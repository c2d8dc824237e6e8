package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGHUP reloads --tls-cert and --tls-key: new connections get the new
// certificate, an open connection goes on with its own, and a pair that
// does not load leaves the one in use.
func TestTLSReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a"), 0o700)
	os.MkdirAll(filepath.Join(dir, "b"), 0o700)
	_, certA, keyA, pool := testCA(t, filepath.Join(dir, "a"))
	caB, certB, keyB, _ := testCA(t, filepath.Join(dir, "b"))
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	copyFile(t, certA, certFile)
	copyFile(t, keyA, keyFile)
	srv := startServer(t, filepath.Join(dir, "data"), "--tls-cert", certFile, "--tls-key", keyFile)

	// The client trusts both CAs: the test tells the certificates apart.
	bCA, _ := os.ReadFile(caB)
	pool.AppendCertsFromPEM(bCA)
	client := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	}
	leafOf := func(path string) []byte {
		b, _ := os.ReadFile(path)
		blk, _ := pem.Decode(b)
		return blk.Bytes
	}
	// get returns the certificate the server showed and whether the
	// request went over an open connection.
	get := func(hc *http.Client) (cert []byte, reused bool) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/healthz", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Raw, reused
	}

	open := client()
	if cert, _ := get(open); !bytes.Equal(cert, leafOf(certA)) {
		t.Fatal("the server does not show the first certificate")
	}
	reloads := func() int { return strings.Count(srv.Log.String(), "certificate reloaded") }
	copyFile(t, certB, certFile)
	copyFile(t, keyB, keyFile)
	srv.Cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, func() bool { return reloads() == 1 }, "the reload's log line")

	if cert, reused := get(open); !reused || !bytes.Equal(cert, leafOf(certA)) {
		t.Errorf("the open connection after SIGHUP: reused %v, first certificate %v; want it kept as it was", reused, bytes.Equal(cert, leafOf(certA)))
	}
	if cert, _ := get(client()); !bytes.Equal(cert, leafOf(certB)) {
		t.Error("a new connection after SIGHUP does not get the new certificate")
	}

	// A broken pair (a key that is not the certificate's) is refused and
	// the certificate in use stays.
	copyFile(t, keyA, keyFile)
	srv.Cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, func() bool { return strings.Contains(srv.Log.String(), "certificate was not reloaded") }, "the refused reload's log line")
	if cert, _ := get(client()); !bytes.Equal(cert, leafOf(certB)) {
		t.Error("after a refused reload, new connections do not get the certificate in use")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func waitLog(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --mqtts-cert and --mqtts-key give the MQTTS listener a certificate of its
// own; HTTPS keeps --tls-cert's.
func TestMQTTSOwnCertificate(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a"), 0o700)
	os.MkdirAll(filepath.Join(dir, "b"), 0o700)
	_, certA, keyA, pool := testCA(t, filepath.Join(dir, "a"))
	caB, certB, keyB, _ := testCA(t, filepath.Join(dir, "b"))
	bCA, _ := os.ReadFile(caB)
	pool.AppendCertsFromPEM(bCA)
	srv := startServer(t, filepath.Join(dir, "data"), "--tls-cert", certA, "--tls-key", keyA,
		"--mqtts", "127.0.0.1:0", "--mqtts-cert", certB, "--mqtts-key", keyB)
	leafOf := func(path string) []byte {
		b, _ := os.ReadFile(path)
		blk, _ := pem.Decode(b)
		return blk.Bytes
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(srv.MQTTSURL, "mqtts://"), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	got := conn.ConnectionState().PeerCertificates[0].Raw
	conn.Close()
	if !bytes.Equal(got, leafOf(certB)) {
		t.Error("MQTTS does not show --mqtts-cert")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !bytes.Equal(resp.TLS.PeerCertificates[0].Raw, leafOf(certA)) {
		t.Error("HTTPS does not show --tls-cert")
	}
}
