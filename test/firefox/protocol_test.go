package firefox

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/client"
)

// Mozilla's push protocol from Go, as Firefox speaks it, against the real
// binary: a push encrypted for the channel (RFC 8291, aes128gcm) and posted
// to its endpoint arrives as a notification with the same bytes, which
// decrypt with the channel's keys; an ack takes it out, what is not acked
// comes again after a reconnect (and a restart), an unregistered channel's
// endpoint answers 410.

const (
	chanA = "21668e05-6da8-42c9-b8ab-9cc3f4d5630c"
	chanB = "9a5ff87f-47c9-4215-b2b8-0bdd38b4b305"
)

func TestProtocol(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, data, "127.0.0.1:0")
	ua := dialMozpush(t, srv.URL)
	uaid := ua.hello("")
	ua.ping()

	keys, err := client.NewWebPushKeys()
	if err != nil {
		t.Fatal(err)
	}
	epA := ua.register(chanA)
	epB := ua.register(chanB)
	if !strings.HasPrefix(epA, srv.URL+"/wpush/") || epA == epB {
		t.Fatalf("endpoints %q and %q", epA, epB)
	}

	// A push arrives with the same body and headers, and decrypts.
	body := encrypt(t, keys, []byte("hello, Firefox"))
	msgA := post(t, epA, body, http.StatusCreated)
	n := ua.notification()
	got, _ := base64.RawURLEncoding.DecodeString(n.Data)
	if n.ChannelID != chanA || n.Version != msgA || !bytes.Equal(got, body) || n.Headers["encoding"] != "aes128gcm" || n.TTL != 60 {
		t.Fatalf("notification %+v, want channel %s, version %s, the posted body, aes128gcm, ttl 60", n, chanA, msgA)
	}
	if plain, err := keys.Decrypt(got); err != nil || string(plain) != "hello, Firefox" {
		t.Fatalf("decrypted %q, %v", plain, err)
	}
	ua.ack(n)

	// Unacked, it comes again on the next connection with the UAID, after
	// what is acked is gone; so does one sent while offline, and after a
	// restart of the server too.
	msgB := post(t, epB, encrypt(t, keys, []byte("second")), http.StatusCreated)
	if n := ua.notification(); n.Version != msgB || n.ChannelID != chanB {
		t.Fatalf("got %+v, want %s on %s", n, msgB, chanB)
	}
	ua.close()
	msgC := post(t, epA, encrypt(t, keys, []byte("while offline")), http.StatusCreated)
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.stop()
	srv = startServer(t, data, addr)

	ua = dialMozpush(t, srv.URL)
	if again := ua.hello(uaid); again != uaid {
		t.Fatalf("hello with UAID %q answered %q: the UAID must be stable", uaid, again)
	}
	if n := ua.notification(); n.Version != msgB {
		t.Fatalf("first after reconnecting: %+v, want the unacked %s", n, msgB)
	} else {
		ua.ack(n)
	}
	if n := ua.notification(); n.Version != msgC {
		t.Fatalf("then %+v, want %s", n, msgC)
	} else {
		ua.ack(n)
	}
	ua.ping()

	// Unregister: the endpoint is gone; the other channel still works.
	ua.unregister(chanA)
	post(t, epA, encrypt(t, keys, []byte("x")), http.StatusGone)
	post(t, epB, nil, http.StatusCreated)
	if n := ua.notification(); n.ChannelID != chanB || n.Data != "" {
		t.Fatalf("an empty push: %+v", n)
	}
}

// mozUA is one connection speaking Mozilla's push protocol.
type mozUA struct {
	t *testing.T
	c *websocket.Conn
}

func dialMozpush(t *testing.T, base string) *mozUA {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(base, "http://", "ws://", 1)+"/mozpush",
		&websocket.DialOptions{Subprotocols: []string{"push-notification"}})
	if err != nil {
		t.Fatalf("dial /mozpush: %v", err)
	}
	if c.Subprotocol() != "push-notification" {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	t.Cleanup(func() { c.CloseNow() })
	return &mozUA{t: t, c: c}
}

func (u *mozUA) close() { u.c.Close(websocket.StatusNormalClosure, "") }

func (u *mozUA) send(v any) {
	u.t.Helper()
	b, _ := json.Marshal(v)
	if err := u.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		u.t.Fatalf("write: %v", err)
	}
}

// reply is any server message.
type reply struct {
	MessageType  string            `json:"messageType"`
	UAID         string            `json:"uaid"`
	Status       int               `json:"status"`
	UseWebPush   bool              `json:"use_webpush"`
	ChannelID    string            `json:"channelID"`
	PushEndpoint string            `json:"pushEndpoint"`
	Version      string            `json:"version"`
	Data         string            `json:"data"`
	Headers      map[string]string `json:"headers"`
	TTL          int               `json:"ttl"`
}

func (u *mozUA) read() (reply, string) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := u.c.Read(ctx)
	if err != nil {
		u.t.Fatalf("read: %v", err)
	}
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		u.t.Fatalf("server message %q: %v", b, err)
	}
	return r, string(b)
}

func (u *mozUA) hello(uaid string) string {
	u.t.Helper()
	m := map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": map[string]string{}}
	if uaid != "" {
		m["uaid"] = uaid
	}
	u.send(m)
	r, raw := u.read()
	if r.MessageType != "hello" || r.Status != 200 || !r.UseWebPush || r.UAID == "" || len(r.UAID) > 128 {
		u.t.Fatalf("hello reply %s", raw)
	}
	return r.UAID
}

func (u *mozUA) register(channelID string) string {
	u.t.Helper()
	u.send(map[string]string{"messageType": "register", "channelID": channelID})
	r, raw := u.read()
	if r.MessageType != "register" || r.ChannelID != channelID || r.Status != 200 || r.PushEndpoint == "" {
		u.t.Fatalf("register reply %s", raw)
	}
	return r.PushEndpoint
}

func (u *mozUA) unregister(channelID string) {
	u.t.Helper()
	u.send(map[string]any{"messageType": "unregister", "channelID": channelID, "code": 200})
	if r, raw := u.read(); r.MessageType != "unregister" || r.ChannelID != channelID || r.Status != 200 {
		u.t.Fatalf("unregister reply %s", raw)
	}
}

// ping sends Firefox's ping, "{}", and expects only the "{}" pong: since
// messages go out in order, anything queued before it would show.
func (u *mozUA) ping() {
	u.t.Helper()
	u.send(map[string]any{})
	if _, raw := u.read(); raw != "{}" {
		u.t.Fatalf("got %s, want only the pong {}", raw)
	}
}

func (u *mozUA) notification() reply {
	u.t.Helper()
	r, raw := u.read()
	if r.MessageType != "notification" || r.Version == "" {
		u.t.Fatalf("got %s, want a notification", raw)
	}
	return r
}

func (u *mozUA) ack(n reply) {
	u.send(map[string]any{"messageType": "ack", "updates": []map[string]any{{"channelID": n.ChannelID, "version": n.Version, "code": 100}}})
}

// post sends body to a push endpoint as an application server does (no
// VAPID: these channels were registered without a key) and returns the
// message ID from the Location of a 201.
func post(t *testing.T, endpoint string, body []byte, want int) string {
	t.Helper()
	req, _ := http.NewRequest("POST", endpoint, bytes.NewReader(body))
	req.Header.Set("TTL", "60")
	if len(body) > 0 {
		req.Header.Set("Content-Encoding", "aes128gcm")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("push to %s: %d, want %d", endpoint, resp.StatusCode, want)
	}
	loc := resp.Header.Get("Location")
	return loc[strings.LastIndex(loc, "/")+1:]
}

// encrypt encrypts plain for keys' subscription as an application server
// does (RFC 8291 with RFC 8188's aes128gcm, one record).
func encrypt(t *testing.T, keys *client.WebPushKeys, plain []byte) []byte {
	t.Helper()
	uaPub, err := ecdh.P256().NewPublicKey(mustB64(t, keys.P256DH()))
	if err != nil {
		t.Fatal(err)
	}
	auth := mustB64(t, keys.AuthSecret())
	as, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := as.ECDH(uaPub)
	if err != nil {
		t.Fatal(err)
	}
	asPub := as.PublicKey().Bytes()
	info := append(append([]byte("WebPush: info\x00"), uaPub.Bytes()...), asPub...)
	prkKey, _ := hkdf.Extract(sha256.New, shared, auth)
	ikm, _ := hkdf.Expand(sha256.New, prkKey, string(info), 32)
	salt := make([]byte, 16)
	rand.Read(salt)
	prk, _ := hkdf.Extract(sha256.New, ikm, salt)
	cek, _ := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	nonce, _ := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)
	out := append([]byte{}, salt...)
	out = binary.BigEndian.AppendUint32(out, 4096)
	out = append(out, byte(len(asPub)))
	out = append(out, asPub...)
	// The last (and only) record ends with the delimiter 2.
	return gcm.Seal(out, nonce, append(append([]byte{}, plain...), 2), nil)
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
