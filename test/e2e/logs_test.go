package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/test/heraldtest"
)

// A run's log, in JSON at debug level, has a line for each refusal and
// each drain step, and none of the secrets, tokens or payloads the run
// used.
func TestLogsKeepSecrets(t *testing.T) {
	tok := make([]byte, 24)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := heraldtest.Start(t, t.TempDir(), "--log-format", "json", "--log-level", "debug", "--mqtt", "127.0.0.1:0", "--admin-token-file", tokenFile)
	ctx := context.Background()
	call := func(method, path string, auth func(*http.Request), in, out any) int {
		t.Helper()
		b, _ := json.Marshal(in)
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(b))
		auth(req)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	master := func(r *http.Request) { r.SetBasicAuth(srv.AppKey, srv.Secret) }
	secrets := map[string]string{"master secret": srv.Secret}

	// An admin call, and a second app whose master secret is new.
	secrets["admin token"] = token
	var app struct {
		MasterSecret string `json:"master_secret"`
	}
	if st := call("POST", "/v1/apps", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, map[string]string{"name": "second"}, &app); st != http.StatusCreated {
		t.Fatalf("create app: %d", st)
	}
	secrets["second app's master secret"] = app.MasterSecret

	// APNs credentials: the key is a secret.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	p8 := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	secrets["APNs key"] = strings.Split(p8, "\n")[1]
	if st := call("PUT", "/v1/apps/"+srv.AppKey+"/channels/apns", master, map[string]any{
		"key_p8": p8, "key_id": "ABC123DEFG", "team_id": "TEAM123456", "topic": "com.example.app", "environment": "sandbox",
	}, nil); st != http.StatusOK {
		t.Fatalf("APNs settings: %d", st)
	}

	reg, err := client.Register(ctx, nil, srv.URL, client.RegisterRequest{AppKey: srv.AppKey, Platform: "android"})
	if err != nil {
		t.Fatal(err)
	}
	secrets["device secret"] = reg.DeviceSecret
	const payload, title = "payload-7f3a9c", "title-2b8e1d"
	secrets["payload"], secrets["title"] = payload, title
	if st := call("POST", "/v1/push", master, map[string]any{
		"audience": map[string]any{"registration_id": []string{reg.RegistrationID}},
		"message":  map[string]string{"text": payload}, "notification": map[string]string{"title": title},
	}, nil); st != http.StatusAccepted {
		t.Fatalf("push: %d", st)
	}
	dev := client.NewDevice(*reg, nil)
	if msgs, err := dev.Poll(ctx, 0); err != nil || len(msgs) != 1 {
		t.Fatalf("poll: %v %v", msgs, err)
	}

	// A push subscription: its endpoint's token is a capability.
	sub, err := dev.CreateWebPushSubscription(ctx, client.WebPushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secrets["push subscription token"] = sub.Token
	req, _ := http.NewRequest("POST", sub.Endpoint, strings.NewReader("webpush-body-5c1d"))
	req.Header.Set("TTL", "60")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	secrets["Web Push body"] = "webpush-body-5c1d"

	// Refusals: a wrong device secret over HTTP and over MQTT, a wrong
	// master secret.
	const wrong = "wrong-secret-9d4e6a"
	secrets["a wrong secret"] = wrong
	bad := *reg
	bad.DeviceSecret = wrong
	if _, err := client.NewDevice(bad, nil).Poll(ctx, 0); err == nil {
		t.Fatal("a poll with a wrong secret was accepted")
	}
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.NewDevice(bad, nil).ListenMQTT(mctx, srv.MQTTURL, func(client.Message) error { return nil }); !errors.Is(err, client.ErrRefused) {
		t.Fatalf("MQTT with a wrong secret: %v, want refused", err)
	}
	call("POST", "/v1/push", func(r *http.Request) { r.SetBasicAuth(srv.AppKey, wrong) }, map[string]any{"audience": "all", "message": 1}, nil)

	srv.Stop()
	log := srv.Log.String()
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("a log line is not JSON: %q", line)
		}
	}
	for what, s := range secrets {
		if s != "" && strings.Contains(log, s) {
			t.Errorf("the log holds the %s", what)
		}
	}
	for _, want := range []string{`"msg":"auth failure"`, `"msg":"mqtt: connection refused"`, `"msg":"drain: `} {
		if !strings.Contains(log, want) {
			t.Errorf("the log has no %s line", want)
		}
	}
}
