package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/webpush"
)

// vendors is one local TLS server with HTTP/2 that speaks the three
// vendors' documented protocols: APNs (/3/device/), Google's OAuth2 token
// endpoint (/token) with FCM HTTP v1 (/v1/projects/), and a Web Push
// service (/wp/). Each checks the credentials as the vendor does and
// records what it was sent; the test sets its answers.
type vendors struct {
	t   *testing.T
	srv *httptest.Server

	apnsKey   *ecdsa.PrivateKey // the .p8 key; the server checks signatures with its public half
	saKey     *rsa.PrivateKey   // the service account's key
	wpKeys    *client.WebPushKeys
	vapidPub  []byte // the app's VAPID public key, once known
	certFile  string // the server's certificate, for SSL_CERT_FILE
	topic     string
	projectID string

	mu       sync.Mutex
	answer   func(r *http.Request, kind string) (int, string, http.Header) // nil: 200
	hold     chan struct{}                                                 // when set, requests wait for it to close
	holdKind string                                                        // only requests of this kind wait; "": all
	requests []request
	tokens   int // OAuth2 token grants
	errs     []error
	arrived  chan request
}

// request is one push a vendor received.
type request struct {
	kind    string // apns, fcm or webpush
	path    string
	header  http.Header
	payload map[string]any // APNs payload, FCM message, or the decrypted Web Push body
}

func newVendors(t *testing.T) *vendors {
	t.Helper()
	v := &vendors{t: t, topic: "com.example.app", projectID: "herald-test", arrived: make(chan request, 1000)}
	var err error
	if v.apnsKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if v.saKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if v.wpKeys, err = client.NewWebPushKeys(); err != nil {
		t.Fatal(err)
	}
	v.srv = httptest.NewUnstartedServer(http.HandlerFunc(v.serve))
	v.srv.EnableHTTP2 = true
	v.srv.StartTLS()
	t.Cleanup(v.srv.Close)
	v.certFile = filepath.Join(t.TempDir(), "vendors.pem")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: v.srv.Certificate().Raw})
	if err := os.WriteFile(v.certFile, pemCert, 0o600); err != nil {
		t.Fatal(err)
	}
	return v
}

// env is what the server needs to trust the vendors' certificate.
func (v *vendors) env() []string { return []string{"SSL_CERT_FILE=" + v.certFile} }

func (v *vendors) p8() string {
	der, err := x509.MarshalPKCS8PrivateKey(v.apnsKey)
	if err != nil {
		v.t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func (v *vendors) serviceAccount() map[string]any {
	der, err := x509.MarshalPKCS8PrivateKey(v.saKey)
	if err != nil {
		v.t.Fatal(err)
	}
	return map[string]any{
		"type": "service_account", "project_id": v.projectID, "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "herald@herald-test.iam.gserviceaccount.com", "client_id": "1",
		"token_uri": v.srv.URL + "/token",
	}
}

func (v *vendors) subscription() map[string]any {
	return map[string]any{"endpoint": v.srv.URL + "/wp/sub1", "keys": map[string]string{"p256dh": v.wpKeys.P256DH(), "auth": v.wpKeys.AuthSecret()}}
}

func (v *vendors) setAnswer(f func(r *http.Request, kind string) (int, string, http.Header)) {
	v.mu.Lock()
	v.answer = f
	v.mu.Unlock()
}

func (v *vendors) fail(w http.ResponseWriter, status int, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err)
	v.mu.Unlock()
	http.Error(w, err.Error(), status)
}

func (v *vendors) serve(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 && !strings.HasPrefix(r.URL.Path, "/token") {
		v.fail(w, 505, fmt.Errorf("%s over %s, want HTTP/2", r.URL.Path, r.Proto))
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/3/device/"):
		v.serveAPNs(w, r)
	case r.URL.Path == "/token":
		v.serveToken(w, r)
	case strings.HasPrefix(r.URL.Path, "/v1/projects/"):
		v.serveFCM(w, r)
	case strings.HasPrefix(r.URL.Path, "/wp/"):
		v.serveWebPush(w, r)
	default:
		v.fail(w, 404, fmt.Errorf("unknown path %s", r.URL.Path))
	}
}

func (v *vendors) serveAPNs(w http.ResponseWriter, r *http.Request) {
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "bearer ")
	tok, err := jwt.Parse(bearer, func(t *jwt.Token) (any, error) {
		if t.Header["kid"] != "KEY1234567" {
			return nil, fmt.Errorf("kid %v", t.Header["kid"])
		}
		return &v.apnsKey.PublicKey, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuedAt())
	if err != nil || tok.Claims.(jwt.MapClaims)["iss"] != "TEAM123456" {
		w.WriteHeader(403)
		w.Write([]byte(`{"reason":"InvalidProviderToken"}`))
		return
	}
	if r.Header.Get("apns-topic") != v.topic {
		w.WriteHeader(400)
		w.Write([]byte(`{"reason":"BadTopic"}`))
		return
	}
	var payload map[string]any
	if err := json.NewDecoder(r.Body).Decode(&payload); err != nil {
		v.fail(w, 400, err)
		return
	}
	v.record(w, r, request{kind: "apns", path: r.URL.Path, header: r.Header.Clone(), payload: payload})
}

func (v *vendors) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		w.WriteHeader(400)
		w.Write([]byte(`{"error":"unsupported_grant_type"}`))
		return
	}
	tok, err := jwt.Parse(r.Form.Get("assertion"), func(*jwt.Token) (any, error) { return &v.saKey.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(v.srv.URL+"/token"))
	if err != nil || !strings.Contains(fmt.Sprint(tok.Claims.(jwt.MapClaims)["scope"]), "firebase.messaging") {
		w.WriteHeader(400)
		w.Write([]byte(`{"error":"invalid_grant","error_description":"bad assertion"}`))
		return
	}
	v.mu.Lock()
	v.tokens++
	n := v.tokens
	v.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"Bearer","expires_in":3600}`, n)
}

func (v *vendors) serveFCM(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer at-") {
		w.WriteHeader(401)
		w.Write([]byte(`{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`))
		return
	}
	if r.URL.Path != "/v1/projects/"+v.projectID+"/messages:send" {
		v.fail(w, 404, fmt.Errorf("FCM path %s", r.URL.Path))
		return
	}
	var body struct {
		Message map[string]any `json:"message"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		v.fail(w, 400, err)
		return
	}
	v.record(w, r, request{kind: "fcm", path: r.URL.Path, header: r.Header.Clone(), payload: body.Message})
}

func (v *vendors) serveWebPush(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	appKey := v.vapidPub
	v.mu.Unlock()
	creds, err := webpush.ParseVAPID(r.Header.Get("Authorization"), r.Header.Get("Crypto-Key"))
	if err == nil {
		err = webpush.Verify(creds, appKey, v.srv.URL, time.Now())
	}
	if err != nil {
		v.fail(w, 403, fmt.Errorf("VAPID: %w", err))
		return
	}
	body, _ := io.ReadAll(r.Body)
	plain, err := v.wpKeys.Decrypt(body)
	if err != nil {
		v.fail(w, 400, fmt.Errorf("decrypt: %w", err))
		return
	}
	var payload map[string]any
	if err := json.Unmarshal(plain, &payload); err != nil {
		v.fail(w, 400, err)
		return
	}
	v.record(w, r, request{kind: "webpush", path: r.URL.Path, header: r.Header.Clone(), payload: payload})
}

// record keeps req and answers as the test says (200, or 201 for Web Push).
func (v *vendors) record(w http.ResponseWriter, r *http.Request, req request) {
	v.mu.Lock()
	v.requests = append(v.requests, req)
	answer, hold := v.answer, v.hold
	if v.holdKind != "" && v.holdKind != req.kind {
		hold = nil
	}
	v.mu.Unlock()
	v.arrived <- req
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	status, reason, header := http.StatusOK, "", http.Header(nil)
	if req.kind == "webpush" {
		status = http.StatusCreated
	}
	if answer != nil {
		if s, rs, h := answer(r, req.kind); s != 0 {
			status, reason, header = s, rs, h
		}
	}
	for k, vs := range header {
		w.Header()[k] = vs
	}
	w.WriteHeader(status)
	if reason != "" {
		w.Write([]byte(reason))
	} else if req.kind == "fcm" && status == 200 {
		fmt.Fprintf(w, `{"name":"projects/%s/messages/1"}`, v.projectID)
	}
}

// next waits for the next push a vendor receives.
func (v *vendors) next(t *testing.T) request {
	t.Helper()
	select {
	case r := <-v.arrived:
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("no push reached a vendor in 20 s; vendor errors: %v", v.errors())
		return request{}
	}
}

// count is how many pushes the vendors received.
func (v *vendors) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.requests)
}

func (v *vendors) errors() []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]error(nil), v.errs...)
}

func b64decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
