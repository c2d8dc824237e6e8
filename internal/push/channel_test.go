package push

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestNewChannel(t *testing.T) {
	key, _ := ecdh.P256().GenerateKey(rand.Reader)
	pub := key.PublicKey().Bytes()
	p256dh := base64.RawURLEncoding.EncodeToString(pub)
	auth := base64.RawURLEncoding.EncodeToString(make([]byte, 16))
	sub := func(endpoint, p, a string) *WebPushSubscription {
		return &WebPushSubscription{Endpoint: endpoint, P256DH: p, Auth: a}
	}
	good := "https://fcm.googleapis.com/fcm/send/abc:APA91b"

	ch, err := NewChannel(strings.Repeat("AB", 32), "", nil)
	if err != nil || ch.Kind != ChannelAPNs || ch.Token != strings.Repeat("ab", 32) {
		t.Errorf("APNs token: %+v, %v; want it kept in lower case", ch, err)
	}
	fcm := "cXyZ_1-2:APA91bH" + strings.Repeat("x", 140)
	if ch, err := NewChannel("", fcm, nil); err != nil || ch.Kind != ChannelFCM || ch.Token != fcm {
		t.Errorf("FCM token: %+v, %v", ch, err)
	}
	padded := base64.URLEncoding.EncodeToString(pub)
	ch, err = NewChannel("", "", sub(good, padded, base64.URLEncoding.EncodeToString(make([]byte, 16))))
	if err != nil || ch.Kind != ChannelWebPush || ch.WebPush.P256DH != p256dh || ch.WebPush.Auth != auth || ch.WebPush.Endpoint != good {
		t.Errorf("Web Push with padded keys: %+v, %v; want the keys unpadded", ch.WebPush, err)
	}
	if ch, err := NewChannel("", "", nil); err != nil || ch.Kind != ChannelHerald {
		t.Errorf("no channel: %+v, %v", ch, err)
	}

	offCurve := append([]byte{4}, make([]byte, 64)...)
	offCurve[64] = 1
	for _, c := range []struct {
		name      string
		apns, fcm string
		wp        *WebPushSubscription
		want      error
	}{
		{"two channels", strings.Repeat("ab", 32), fcm, nil, ErrBadToken},
		{"apns odd length", strings.Repeat("a", 65), "", nil, ErrBadToken},
		{"apns too short", strings.Repeat("ab", 15), "", nil, ErrBadToken},
		{"apns too long", strings.Repeat("ab", 101), "", nil, ErrBadToken},
		{"apns not hex", strings.Repeat("zz", 32), "", nil, ErrBadToken},
		{"apns 4 MiB", strings.Repeat("ab", 2<<20), "", nil, ErrBadToken},
		{"fcm too long", "", strings.Repeat("a", MaxFCMToken+1), nil, ErrBadToken},
		{"fcm space", "", "abc def", nil, ErrBadToken},
		{"fcm non-ASCII", "", "abcé", nil, ErrBadToken},
		{"webpush missing keys", "", "", sub(good, "", auth), ErrBadSubscription},
		{"webpush http", "", "", sub("http://push.example/x", p256dh, auth), ErrBadSubscription},
		{"webpush relative", "", "", sub("/wpush/x", p256dh, auth), ErrBadSubscription},
		{"webpush no host", "", "", sub("https:///x", p256dh, auth), ErrBadSubscription},
		{"webpush user info", "", "", sub("https://u:p@push.example/x", p256dh, auth), ErrBadSubscription},
		{"webpush fragment", "", "", sub(good+"#f", p256dh, auth), ErrBadSubscription},
		{"webpush space", "", "", sub(good+" x", p256dh, auth), ErrBadSubscription},
		{"webpush long", "", "", sub("https://push.example/"+strings.Repeat("x", MaxEndpoint), p256dh, auth), ErrBadSubscription},
		{"webpush p256dh not base64", "", "", sub(good, "!!!", auth), ErrBadSubscription},
		{"webpush p256dh compressed", "", "", sub(good, base64.RawURLEncoding.EncodeToString(pub[:33]), auth), ErrBadSubscription},
		{"webpush p256dh off the curve", "", "", sub(good, base64.RawURLEncoding.EncodeToString(offCurve), auth), ErrBadSubscription},
		{"webpush auth short", "", "", sub(good, p256dh, base64.RawURLEncoding.EncodeToString(make([]byte, 15))), ErrBadSubscription},
		{"webpush auth 4 MiB", "", "", sub(good, p256dh, strings.Repeat("A", 4<<20)), ErrBadSubscription},
	} {
		if _, err := NewChannel(c.apns, c.fcm, c.wp); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
