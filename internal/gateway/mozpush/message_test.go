package mozpush

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const chid = "5477bfda-22db-45d4-9614-fee369630260"

func TestDecode(t *testing.T) {
	good := []struct {
		in   string
		want Message
	}{
		{`{}`, Message{Type: TypePing}},
		{` { } `, Message{Type: TypePing}},
		{`{"messageType":"ping"}`, Message{Type: TypePing}},
		// What Firefox sends on a first start, and with subscriptions.
		{`{"messageType":"hello","broadcasts":{"remote-settings/monitor_changes":"\"123\""},"use_webpush":true}`,
			Message{Type: TypeHello, UseWebPush: true}},
		{`{"messageType":"hello","uaid":"abc.def","channelIDs":["` + chid + `"],"use_webpush":true}`,
			Message{Type: TypeHello, UAID: "abc.def", ChannelIDs: []string{chid}, UseWebPush: true}},
		{`{"messageType":"hello","uaid":null}`, Message{Type: TypeHello}},
		{`{"channelID":"` + chid + `","messageType":"register"}`, Message{Type: TypeRegister, ChannelID: chid}},
		{`{"channelID":"` + strings.ToUpper(chid) + `","messageType":"register","key":"BCVx="}`,
			Message{Type: TypeRegister, ChannelID: strings.ToUpper(chid), Key: "BCVx="}},
		{`{"channelID":"` + chid + `","messageType":"unregister","code":200}`, Message{Type: TypeUnregister, ChannelID: chid, Code: 200}},
		{`{"messageType":"ack","updates":[{"channelID":"` + chid + `","version":"m_1","code":100}]}`,
			Message{Type: TypeAck, Updates: []Update{{ChannelID: chid, Version: "m_1", Code: 100}}}},
		{`{"messageType":"ack","updates":[]}`, Message{Type: TypeAck, Updates: []Update{}}},
		{`{"messageType":"nack","version":"m_1","code":301}`, Message{Type: TypeNack, Version: "m_1", Code: 301}},
		{`{"messageType":"broadcast_subscribe","broadcasts":{"x":"1"}}`, Message{Type: TypeBroadcastSubscribe}},
		// Unknown keys are ignored, as Mozilla's server does.
		{`{"messageType":"ping","extra":[1,2]}`, Message{Type: TypePing}},
	}
	for _, c := range good {
		got, err := Decode([]byte(c.in))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Decode(%s) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []string{
		``, `null`, `[]`, `"hello"`, `1`, `{`, `{}{}`, `{} x`, "\xff",
		`{"foo":1}`,
		`{"messageType":1}`,
		`{"messageType":"hello","uaid":1}`,
		`{"messageType":"hello","channelIDs":"x"}`,
		`{"messageType":"notification"}`,
		`{"messageType":"` + strings.Repeat("é", 40) + `"}`,
		`{"messageType":"register"}`,
		`{"messageType":"register","channelID":"not-a-uuid"}`,
		`{"messageType":"register","channelID":"` + chid + `x"}`,
		`{"messageType":"register","channelID":"5477bfda_22db-45d4-9614-fee369630260"}`,
		`{"messageType":"register","channelID":"5477bfdg-22db-45d4-9614-fee369630260"}`,
		`{"messageType":"register","channelID":"` + chid + `","key":"` + strings.Repeat("A", MaxKeyLen+1) + `"}`,
		`{"messageType":"unregister","channelID":7}`,
		`{"messageType":"ack"}`,
		`{"messageType":"ack","updates":null}`,
		`{"messageType":"ack","updates":[{"channelID":"x","version":"m_1"}]}`,
		`{"messageType":"ack","updates":[{"channelID":"` + chid + `","version":""}]}`,
		`{"messageType":"ack","updates":[{"channelID":"` + chid + `","version":"` + strings.Repeat("v", MaxVersionLen+1) + `"}]}`,
		`{"messageType":"ack","updates":[{"channelID":"` + chid + `","version":"m_1","code":1.5}]}`,
		`{"messageType":"ack","updates":{}}`,
		`{"messageType":"nack"}`,
		`{"messageType":"nack","version":""}`,
		// A key twice: encoding/json would take the last, a proxy or a log
		// reader the first.
		`{"messageType":"register","channelID":"` + chid + `","channelID":"` + chid2 + `"}`,
		`{"messageType":"ping","messagetype":"hello"}`,
		`{"messageType":"ack","updates":[{"channelID":"` + chid + `","version":"m_1","Version":"m_2"}]}`,
	}
	for _, in := range bad {
		_, err := Decode([]byte(in))
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Reason == "" {
			t.Errorf("Decode(%q) error = %v, want a ProtocolError with a reason", in, err)
		}
	}
	many := `{"messageType":"ack","updates":[` + strings.Repeat(`{"channelID":"`+chid+`","version":"v"},`, MaxUpdates) + `{"channelID":"` + chid + `","version":"v"}]}`
	if _, err := Decode([]byte(many)); err == nil {
		t.Errorf("an ack of %d updates was accepted", MaxUpdates+1)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, m := range []Message{
		{Type: TypePing},
		{Type: TypeHello, UseWebPush: true},
		{Type: TypeHello, UAID: "a.b", ChannelIDs: []string{chid}, UseWebPush: true},
		{Type: TypeRegister, ChannelID: chid, Key: "BA=="},
		{Type: TypeUnregister, ChannelID: chid, Code: 200},
		{Type: TypeAck, Updates: []Update{{ChannelID: chid, Version: "m_1", Code: 101}}},
		{Type: TypeNack, Version: "m_1", Code: 302},
		{Type: TypeBroadcastSubscribe},
	} {
		got, err := Decode(Encode(m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("Decode(Encode(%+v)) = %+v, %v (wire %s)", m, got, err, Encode(m))
		}
	}
}

// TestServerMessages pins the JSON the server sends, field for field, as
// Firefox reads it.
func TestServerMessages(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{helloReply{MessageType: TypeHello, UAID: "u", Status: 200, UseWebPush: true},
			`{"messageType":"hello","uaid":"u","status":200,"use_webpush":true,"broadcasts":{}}`},
		{registerReply{MessageType: TypeRegister, ChannelID: chid, Status: 200, PushEndpoint: "http://h/wpush/t"},
			`{"messageType":"register","channelID":"` + chid + `","status":200,"pushEndpoint":"http://h/wpush/t"}`},
		{registerReply{MessageType: TypeRegister, ChannelID: chid, Status: 400},
			`{"messageType":"register","channelID":"` + chid + `","status":400}`},
		{unregisterReply{MessageType: TypeUnregister, ChannelID: chid, Status: 200},
			`{"messageType":"unregister","channelID":"` + chid + `","status":200}`},
		{Notification{MessageType: TypeNotification, ChannelID: chid, Version: "m_1", Data: "AAE", Headers: map[string]string{"encoding": "aes128gcm"}, TTL: 60},
			`{"messageType":"notification","channelID":"` + chid + `","version":"m_1","data":"AAE","headers":{"encoding":"aes128gcm"},"ttl":60}`},
		{Notification{MessageType: TypeNotification, ChannelID: chid, Version: "m_2"},
			`{"messageType":"notification","channelID":"` + chid + `","version":"m_2","ttl":0}`},
	} {
		if got := string(mustJSON(c.v)); got != c.want {
			t.Errorf("encoded\n%s\nwant\n%s", got, c.want)
		}
	}
}

// FuzzDecode: no input panics; an error is always a ProtocolError; what
// decodes encodes to the same message again (net/netip.FuzzParse's model).
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"messageType":"hello","uaid":"","channelIDs":[],"use_webpush":true,"broadcasts":{}}`,
		`{"messageType":"register","channelID":"` + chid + `","key":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4="}`,
		`{"messageType":"unregister","channelID":"` + chid + `","code":200}`,
		`{"messageType":"ack","updates":[{"channelID":"` + chid + `","version":"m_1","code":100}]}`,
		`{"messageType":"nack","version":"m_1","code":301}`,
		`{"messageType":"broadcast_subscribe","broadcasts":{"a":"b"}}`,
		`{"messageType":"ping"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Decode(%q) error %v is not a ProtocolError", b, err)
			}
			return
		}
		again, err := Decode(Encode(m))
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)) = %v (wire %s)", m, err, Encode(m))
		}
		// Encode leaves out what Decode drops (an empty key, a zero
		// code), so compare the encodings.
		if a, b := Encode(m), Encode(again); string(a) != string(b) {
			t.Fatalf("re-encoding changed %s to %s", a, b)
		}
	})
}
