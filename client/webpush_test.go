package client

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"testing"
)

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return b
}

// TestDecryptRFC8291 decrypts the example of RFC 8291 Appendix A.
func TestDecryptRFC8291(t *testing.T) {
	k, err := ParseWebPushKeys("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94", "BTBZMqHH6r4Tts7J_aSIgg")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.P256DH(), "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"; got != want {
		t.Fatalf("public key %s, want %s", got, want)
	}
	body := mustB64(t, "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
	got, err := k.Decrypt(body)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if want := "When I grow up, I want to be a watermelon"; string(got) != want {
		t.Errorf("Decrypt = %q, want %q", got, want)
	}
	// Any change to the body fails the tag, and is not taken for a message.
	for _, i := range []int{0, 20, 30, len(body) - 1} {
		bad := bytes.Clone(body)
		bad[i] ^= 1
		if _, err := k.Decrypt(bad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("Decrypt with byte %d flipped = %v, want ErrDecrypt", i, err)
		}
	}
	other, _ := NewWebPushKeys()
	if _, err := other.Decrypt(body); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Decrypt with other keys = %v, want ErrDecrypt", err)
	}
}

// encrypt is what an application server does (RFC 8291 §3, RFC 8188),
// with records of rs bytes and pad zero bytes of padding in the last.
func encrypt(t *testing.T, k *WebPushKeys, plain []byte, rs, pad int) []byte {
	t.Helper()
	as, _ := ecdh.P256().GenerateKey(rand.Reader)
	secret, _ := as.ECDH(k.Private.PublicKey())
	salt := make([]byte, 16)
	rand.Read(salt)
	prkKey, _ := hkdf.Extract(sha256.New, secret, k.Auth)
	ikm, _ := hkdf.Expand(sha256.New, prkKey, "WebPush: info\x00"+string(k.Private.PublicKey().Bytes())+string(as.PublicKey().Bytes()), 32)
	prk, _ := hkdf.Extract(sha256.New, ikm, salt)
	cek, _ := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	nonce, _ := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)
	out := append(salt, binary.BigEndian.AppendUint32(nil, uint32(rs))...)
	out = append(out, 65)
	out = append(out, as.PublicKey().Bytes()...)
	per := rs - 17 // plaintext per record, with its delimiter
	for seq := 0; ; seq++ {
		n := min(per, len(plain))
		chunk := append([]byte(nil), plain[:n]...)
		plain = plain[n:]
		last := len(plain) == 0
		if last {
			chunk = append(chunk, 2)
			chunk = append(chunk, make([]byte, min(pad, rs-17-len(chunk)+1))...)
		} else {
			chunk = append(chunk, 1)
		}
		iv := bytes.Clone(nonce)
		for i := range 8 {
			iv[11-i] ^= byte(seq >> (8 * i))
		}
		out = gcm.Seal(out, iv, chunk, nil)
		if last {
			return out
		}
	}
}

func TestDecryptRoundTrip(t *testing.T) {
	k, err := NewWebPushKeys()
	if err != nil {
		t.Fatal(err)
	}
	priv, auth := k.Export()
	back, err := ParseWebPushKeys(priv, auth)
	if err != nil || back.P256DH() != k.P256DH() || back.AuthSecret() != k.AuthSecret() {
		t.Fatalf("Export/ParseWebPushKeys lost the keys: %v", err)
	}
	msg := bytes.Repeat([]byte("herald "), 100)
	for _, c := range []struct{ rs, pad int }{{4096, 0}, {4096, 50}, {100, 0}, {18, 0}, {60, 10}} {
		got, err := k.Decrypt(encrypt(t, k, msg, c.rs, c.pad))
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("rs %d pad %d: Decrypt = %q, %v", c.rs, c.pad, got, err)
		}
	}
	// A cut-off body (a record dropped) must fail: the last record left
	// ends with delimiter 1, not 2.
	body := encrypt(t, k, msg, 100, 0)
	if _, err := k.Decrypt(body[:21+65+100]); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Decrypt of a truncated body = %v, want ErrDecrypt", err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 20), append(make([]byte, 16), 0, 0, 0, 5, 65)} {
		if _, err := k.Decrypt(bad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("Decrypt(%x) = %v, want ErrDecrypt", bad, err)
		}
	}
}

func TestWebPushMessage(t *testing.T) {
	k, _ := NewWebPushKeys()
	body := encrypt(t, k, []byte("hi"), 4096, 0)
	raw, _ := json.Marshal(map[string]any{"webpush": map[string]any{
		"subscription": "sub_1", "label": "sw", "urgency": "high",
		"data": base64.RawURLEncoding.EncodeToString(body), "headers": map[string]string{"content-encoding": "aes128gcm"},
	}})
	m := Message{ID: "m1", Message: raw}
	w, ok := m.WebPush()
	if !ok || w.Subscription != "sub_1" || w.Label != "sw" || w.Urgency != "high" {
		t.Fatalf("WebPush() = %+v, %v", w, ok)
	}
	if got, err := k.DecryptMessage(w); err != nil || string(got) != "hi" {
		t.Errorf("DecryptMessage = %q, %v", got, err)
	}
	w.Headers["content-encoding"] = "aesgcm"
	if _, err := k.DecryptMessage(w); !errors.Is(err, ErrUnsupportedEncoding) {
		t.Errorf("DecryptMessage(aesgcm) = %v, want ErrUnsupportedEncoding", err)
	}
	if got, err := k.DecryptMessage(&WebPushMessage{Subscription: "s"}); got != nil || err != nil {
		t.Errorf("DecryptMessage(no body) = %q, %v; want nothing", got, err)
	}
	for _, data := range []string{``, `{"a":1}`, `{"webpush":{}}`, `"x"`} {
		if _, ok := (&Message{Message: json.RawMessage(data)}).WebPush(); ok {
			t.Errorf("WebPush() of %q = true", data)
		}
	}
}
