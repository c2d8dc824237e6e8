package packet

import (
	"bytes"
	"reflect"
	"testing"
)

// raw concatenates bytes and strings into one slice. Strings are copied as
// they are, with no length prefix: every length in the vectors below is
// written by hand from the specification's layouts, so that the tests check
// the encoder's arithmetic instead of repeating it.
func raw(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case int:
			b = append(b, byte(v))
		case byte:
			b = append(b, v)
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		default:
			panic("raw: unsupported part")
		}
	}
	return b
}

type golden struct {
	name    string
	version byte
	wire    []byte
	packet  Packet
	// decodeOnly marks a valid but non-canonical encoding: it must decode to
	// packet, which AppendTo encodes in a shorter form.
	decodeOnly bool
}

// goldenV3 are 3.1.1 (and one 3.1) packets.
var goldenV3 = []golden{
	{name: "CONNECT minimal", version: Version311,
		wire:   raw(0x10, 16, 0, 4, "MQTT", 4, 0x02, 0, 60, 0, 4, "dev1"),
		packet: &Connect{Version: Version311, CleanStart: true, KeepAlive: 60, ClientID: "dev1"}},
	{name: "CONNECT will user password", version: Version311,
		// flags: user, password, will retain, will QoS 1, will, clean
		wire: raw(0x10, 31, 0, 4, "MQTT", 4, 0xEE, 0, 10,
			0, 2, "id", 0, 3, "a/b", 0, 3, "bye", 0, 1, "u", 0, 2, "pw"),
		packet: &Connect{Version: Version311, CleanStart: true, KeepAlive: 10, ClientID: "id",
			Will:     &Will{Topic: "a/b", Payload: []byte("bye"), QoS: 1, Retain: true},
			Username: "u", HasUsername: true, Password: []byte("pw"), HasPassword: true}},
	{name: "CONNECT empty user name", version: Version311,
		wire:   raw(0x10, 16, 0, 4, "MQTT", 4, 0x82, 0, 0, 0, 2, "id", 0, 0),
		packet: &Connect{Version: Version311, CleanStart: true, ClientID: "id", HasUsername: true}},
	{name: "CONNECT 3.1", version: Version31,
		wire:   raw(0x10, 17, 0, 6, "MQIsdp", 3, 0x02, 0, 60, 0, 3, "cid"),
		packet: &Connect{Version: Version31, CleanStart: true, KeepAlive: 60, ClientID: "cid"}},
	{name: "CONNACK session present", version: Version311,
		wire:   raw(0x20, 2, 0x01, 0x00),
		packet: &Connack{SessionPresent: true}},
	{name: "CONNACK bad user name or password", version: Version311,
		wire:   raw(0x20, 2, 0x00, 0x04),
		packet: &Connack{ReasonCode: ReasonBadUserNameOrPassword}},
	{name: "CONNACK unacceptable protocol version", version: Version311,
		wire:   raw(0x20, 2, 0x00, 0x01),
		packet: &Connack{ReasonCode: ReasonUnsupportedProtocolVersion}},
	{name: "PUBLISH QoS 0", version: Version311,
		wire:   raw(0x30, 10, 0, 3, "a/b", "hello"),
		packet: &Publish{Topic: "a/b", Payload: []byte("hello")}},
	{name: "PUBLISH QoS 1 dup retain", version: Version311,
		wire:   raw(0x3B, 8, 0, 3, "a/b", 0, 7, "x"),
		packet: &Publish{Topic: "a/b", Payload: []byte("x"), PacketID: 7, QoS: 1, Dup: true, Retain: true}},
	{name: "PUBLISH QoS 2 empty payload", version: Version311,
		wire:   raw(0x34, 7, 0, 3, "a/b", 0x01, 0x00),
		packet: &Publish{Topic: "a/b", Payload: []byte{}, PacketID: 256, QoS: 2}},
	{name: "PUBLISH two-byte remaining length", version: Version311,
		wire:   raw(0x30, 0x83, 0x01, 0, 1, "t", bytes.Repeat([]byte{'p'}, 128)),
		packet: &Publish{Topic: "t", Payload: bytes.Repeat([]byte{'p'}, 128)}},
	{name: "PUBACK", version: Version311, wire: raw(0x40, 2, 0, 7), packet: &Puback{PacketID: 7}},
	{name: "PUBREC", version: Version311, wire: raw(0x50, 2, 0, 7), packet: &Pubrec{PacketID: 7}},
	{name: "PUBREL", version: Version311, wire: raw(0x62, 2, 0, 7), packet: &Pubrel{PacketID: 7}},
	{name: "PUBCOMP", version: Version311, wire: raw(0x70, 2, 0xFF, 0xFF), packet: &Pubcomp{PacketID: 0xFFFF}},
	{name: "SUBSCRIBE", version: Version311,
		wire: raw(0x82, 12, 0, 10, 0, 3, "a/#", 1, 0, 1, "+", 0),
		packet: &Subscribe{PacketID: 10, Subscriptions: []Subscription{
			{Filter: "a/#", QoS: 1}, {Filter: "+"}}}},
	{name: "SUBACK", version: Version311,
		wire:   raw(0x90, 4, 0, 10, 0x01, 0x80),
		packet: &Suback{PacketID: 10, ReasonCodes: []ReasonCode{ReasonGrantedQoS1, ReasonUnspecifiedError}}},
	{name: "UNSUBSCRIBE", version: Version311,
		wire:   raw(0xA2, 7, 0, 11, 0, 3, "a/#"),
		packet: &Unsubscribe{PacketID: 11, Filters: []string{"a/#"}}},
	{name: "UNSUBACK", version: Version311, wire: raw(0xB0, 2, 0, 11), packet: &Unsuback{PacketID: 11}},
	{name: "PINGREQ", version: Version311, wire: raw(0xC0, 0), packet: &Pingreq{}},
	{name: "PINGRESP", version: Version311, wire: raw(0xD0, 0), packet: &Pingresp{}},
	{name: "DISCONNECT", version: Version311, wire: raw(0xE0, 0), packet: &Disconnect{}},
	{name: "PUBLISH over 3.1", version: Version31,
		wire:   raw(0x32, 6, 0, 1, "t", 0, 1, "!"),
		packet: &Publish{Topic: "t", Payload: []byte("!"), PacketID: 1, QoS: 1}},
}

// goldenV5 are 5.0 packets, properties in identifier order as AppendTo
// writes them.
var goldenV5 = []golden{
	{name: "CONNECT properties and will properties", version: Version5,
		// flags: user, password, will, clean start
		wire: raw(0x10, 51, 0, 4, "MQTT", 5, 0xC6, 0, 30,
			15, 0x11, 0, 0, 0x0E, 0x10, 0x21, 0, 20, 0x26, 0, 1, "k", 0, 1, "v",
			0, 3, "dev",
			7, 0x01, 1, 0x18, 0, 0, 0, 5,
			0, 1, "w", 0, 1, "x", 0, 1, "u", 0, 1, "p"),
		packet: &Connect{Version: Version5, CleanStart: true, KeepAlive: 30, ClientID: "dev",
			Will: &Will{Topic: "w", Payload: []byte("x"),
				Properties: Properties{PayloadFormat: 1, WillDelay: 5}},
			Username: "u", HasUsername: true, Password: []byte("p"), HasPassword: true,
			Properties: Properties{SessionExpiry: new(uint32(3600)), ReceiveMaximum: 20,
				User: []UserProperty{{"k", "v"}}}}},
	{name: "CONNECT auth method, empty client id", version: Version5,
		wire: raw(0x10, 31, 0, 4, "MQTT", 5, 0x02, 0, 0,
			18, 0x15, 0, 3, "abc", 0x17, 0, 0x19, 1, 0x22, 0, 5, 0x27, 0, 0, 0x10, 0,
			0, 0),
		packet: &Connect{Version: Version5, CleanStart: true,
			Properties: Properties{AuthenticationMethod: "abc", RequestProblemInfo: new(false),
				RequestResponseInfo: true, TopicAliasMaximum: 5, MaximumPacketSize: 4096}}},
	{name: "CONNECT password without user name", version: Version5,
		wire: raw(0x10, 19, 0, 4, "MQTT", 5, 0x42, 0, 0, 0, 0, 2, "id", 0, 2, "pw"),
		packet: &Connect{Version: Version5, CleanStart: true, ClientID: "id",
			Password: []byte("pw"), HasPassword: true}},
	{name: "CONNACK server properties", version: Version5,
		wire: raw(0x20, 19, 0x00, 0x00, 16,
			0x12, 0, 3, "abc", 0x13, 0, 120, 0x22, 0, 10, 0x24, 1, 0x25, 0),
		packet: &Connack{Properties: Properties{AssignedClientID: "abc",
			ServerKeepAlive: new(uint16(120)), TopicAliasMaximum: 10,
			MaximumQoS: new(byte(1)), RetainAvailable: new(false)}}},
	{name: "CONNACK capabilities", version: Version5,
		wire: raw(0x20, 32, 0x01, 0x00, 29,
			0x11, 0, 0, 0x1C, 0x20, 0x1A, 0, 2, "ri", 0x1F, 0, 2, "ok", 0x21, 0, 100,
			0x27, 0, 0, 4, 0, 0x28, 0, 0x29, 1, 0x2A, 0),
		packet: &Connack{SessionPresent: true, Properties: Properties{
			SessionExpiry: new(uint32(7200)), ResponseInfo: "ri", ReasonString: "ok",
			ReceiveMaximum: 100, MaximumPacketSize: 1024, WildcardSubAvailable: new(false),
			SubIDAvailable: new(true), SharedSubAvailable: new(false)}}},
	{name: "CONNACK not authorized", version: Version5,
		wire:   raw(0x20, 3, 0x00, 0x87, 0),
		packet: &Connack{ReasonCode: ReasonNotAuthorized}},
	{name: "PUBLISH every property", version: Version5,
		wire: raw(0x32, 48, 0, 3, "a/b", 0, 5,
			38, 0x01, 1, 0x02, 0, 0, 0, 60, 0x03, 0, 4, "json", 0x08, 0, 1, "r",
			0x09, 0, 2, 1, 2, 0x0B, 1, 0x0B, 0xAC, 0x02, 0x23, 0, 3, 0x26, 0, 1, "a", 0, 1, "b",
			"{}"),
		packet: &Publish{Topic: "a/b", Payload: []byte("{}"), PacketID: 5, QoS: 1,
			Properties: Properties{PayloadFormat: 1, MessageExpiry: new(uint32(60)),
				ContentType: "json", ResponseTopic: "r", CorrelationData: []byte{1, 2},
				SubscriptionIDs: []uint32{1, 300}, TopicAlias: 3,
				User: []UserProperty{{"a", "b"}}}}},
	{name: "PUBLISH topic alias only", version: Version5,
		wire:   raw(0x30, 7, 0, 0, 3, 0x23, 0, 7, "z"),
		packet: &Publish{Payload: []byte("z"), Properties: Properties{TopicAlias: 7}}},
	{name: "PUBLISH no properties", version: Version5,
		wire:   raw(0x30, 8, 0, 3, "a/b", 0, "hi"),
		packet: &Publish{Topic: "a/b", Payload: []byte("hi")}},
	{name: "PUBACK success short form", version: Version5,
		wire: raw(0x40, 2, 0, 7), packet: &Puback{PacketID: 7}},
	{name: "PUBACK reason code only", version: Version5,
		wire:   raw(0x40, 3, 0, 7, 0x10),
		packet: &Puback{PacketID: 7, ReasonCode: ReasonNoMatchingSubscribers}},
	{name: "PUBACK reason string", version: Version5,
		wire: raw(0x40, 10, 0, 7, 0x97, 6, 0x1F, 0, 3, "bad"),
		packet: &Puback{PacketID: 7, ReasonCode: ReasonQuotaExceeded,
			Properties: Properties{ReasonString: "bad"}}},
	{name: "PUBACK success spelled out", version: Version5, decodeOnly: true,
		wire: raw(0x40, 4, 0, 7, 0x00, 0), packet: &Puback{PacketID: 7}},
	{name: "PUBREC", version: Version5,
		wire: raw(0x50, 3, 0, 7, 0x80), packet: &Pubrec{PacketID: 7, ReasonCode: ReasonUnspecifiedError}},
	{name: "PUBREL", version: Version5,
		wire: raw(0x62, 3, 0, 7, 0x92), packet: &Pubrel{PacketID: 7, ReasonCode: ReasonPacketIdentifierNotFound}},
	{name: "PUBCOMP", version: Version5,
		wire: raw(0x70, 2, 0, 7), packet: &Pubcomp{PacketID: 7}},
	{name: "SUBSCRIBE options and shared", version: Version5,
		// options: QoS 1, no local, retain as published, retain handling 1;
		// then QoS 2, retain handling 2
		wire: raw(0x82, 24, 0, 10, 2, 0x0B, 5,
			0, 3, "a/+", 0x1D, 0, 10, "$share/g/x", 0x22),
		packet: &Subscribe{PacketID: 10, Properties: Properties{SubscriptionIDs: []uint32{5}},
			Subscriptions: []Subscription{
				{Filter: "a/+", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 1},
				{Filter: "$share/g/x", QoS: 2, RetainHandling: 2}}}},
	{name: "SUBACK", version: Version5,
		wire: raw(0x90, 6, 0, 10, 0, 0x01, 0x02, 0x8F),
		packet: &Suback{PacketID: 10, ReasonCodes: []ReasonCode{
			ReasonGrantedQoS1, ReasonGrantedQoS2, ReasonTopicFilterInvalid}}},
	{name: "UNSUBSCRIBE user property", version: Version5,
		wire: raw(0xA2, 15, 0, 11, 7, 0x26, 0, 1, "k", 0, 1, "v", 0, 3, "a/+"),
		packet: &Unsubscribe{PacketID: 11, Filters: []string{"a/+"},
			Properties: Properties{User: []UserProperty{{"k", "v"}}}}},
	{name: "UNSUBACK", version: Version5,
		wire:   raw(0xB0, 5, 0, 11, 0, 0x00, 0x11),
		packet: &Unsuback{PacketID: 11, ReasonCodes: []ReasonCode{ReasonSuccess, ReasonNoSubscriptionExisted}}},
	{name: "PINGREQ", version: Version5, wire: raw(0xC0, 0), packet: &Pingreq{}},
	{name: "PINGRESP", version: Version5, wire: raw(0xD0, 0), packet: &Pingresp{}},
	{name: "DISCONNECT normal", version: Version5, wire: raw(0xE0, 0), packet: &Disconnect{}},
	{name: "DISCONNECT reason code only", version: Version5,
		wire: raw(0xE0, 1, 0x8E), packet: &Disconnect{ReasonCode: ReasonSessionTakenOver}},
	{name: "DISCONNECT properties", version: Version5,
		wire: raw(0xE0, 12, 0x04, 10, 0x11, 0, 0, 0, 0, 0x1C, 0, 2, "s2"),
		packet: &Disconnect{ReasonCode: ReasonDisconnectWithWill,
			Properties: Properties{SessionExpiry: new(uint32(0)), ServerReference: "s2"}}},
	{name: "DISCONNECT empty properties", version: Version5, decodeOnly: true,
		wire: raw(0xE0, 2, 0x00, 0), packet: &Disconnect{}},
	{name: "AUTH continue", version: Version5,
		wire: raw(0xF0, 16, 0x18, 14, 0x15, 0, 5, "SCRAM", 0x16, 0, 3, 1, 2, 3),
		packet: &Auth{ReasonCode: ReasonContinueAuthentication, Properties: Properties{
			AuthenticationMethod: "SCRAM", AuthenticationData: []byte{1, 2, 3}}}},
	{name: "AUTH success short form", version: Version5, wire: raw(0xF0, 0), packet: &Auth{}},
}

func allGolden() []golden { return append(append([]golden(nil), goldenV3...), goldenV5...) }

func TestGoldenDecode(t *testing.T) {
	for _, g := range allGolden() {
		t.Run(g.name, func(t *testing.T) {
			fh, n, err := ParseFixedHeader(g.wire, 0)
			if err != nil {
				t.Fatalf("ParseFixedHeader: %v", err)
			}
			if n+fh.Remaining != len(g.wire) {
				t.Fatalf("header says %d+%d bytes, vector has %d", n, fh.Remaining, len(g.wire))
			}
			got, err := Decode(g.version, fh, g.wire[n:])
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, g.packet) {
				t.Fatalf("Decode:\n got %#v\nwant %#v", got, g.packet)
			}
		})
	}
}

func TestGoldenEncode(t *testing.T) {
	for _, g := range allGolden() {
		if g.decodeOnly {
			continue
		}
		t.Run(g.name, func(t *testing.T) {
			prefix := []byte("prefix")
			got, err := g.packet.AppendTo(prefix[:len(prefix):len(prefix)], g.version)
			if err != nil {
				t.Fatalf("AppendTo: %v", err)
			}
			if !bytes.Equal(got[:len(prefix)], prefix) {
				t.Fatalf("AppendTo overwrote dst")
			}
			if got := got[len(prefix):]; !bytes.Equal(got, g.wire) {
				t.Fatalf("AppendTo:\n got % x\nwant % x", got, g.wire)
			}
		})
	}
}

// TestGoldenOtherVersion checks that a packet without version-specific
// fields encodes the same way in 3.1.1 and 3.1, and that 5.0-only fields are
// left out before 5.0.
func TestGoldenOtherVersion(t *testing.T) {
	for _, g := range goldenV3 {
		if _, ok := g.packet.(*Connect); ok {
			continue // the protocol name and level differ by design
		}
		for _, v := range []byte{Version31, Version311} {
			got, err := g.packet.AppendTo(nil, v)
			if err != nil || !bytes.Equal(got, g.wire) {
				t.Errorf("%s in version %d: % x, %v", g.name, v, got, err)
			}
		}
	}
	withProps := &Puback{PacketID: 7, ReasonCode: ReasonQuotaExceeded,
		Properties: Properties{ReasonString: "bad"}}
	got, err := withProps.AppendTo(nil, Version311)
	if want := raw(0x40, 2, 0, 7); err != nil || !bytes.Equal(got, want) {
		t.Errorf("PUBACK with 5.0 fields in 3.1.1: % x, %v; want % x", got, err, want)
	}
	sub := &Suback{PacketID: 1, ReasonCodes: []ReasonCode{ReasonGrantedQoS0, ReasonNotAuthorized}}
	got, err = sub.AppendTo(nil, Version311)
	if want := raw(0x90, 4, 0, 1, 0x00, 0x80); err != nil || !bytes.Equal(got, want) {
		t.Errorf("SUBACK refusal in 3.1.1: % x, %v; want % x", got, err, want)
	}
	for code, want := range map[ReasonCode]byte{
		ReasonServerBusy: 3, ReasonBanned: 5, ReasonBadAuthenticationMethod: 4,
		ReasonClientIdentifierNotValid: 2, ReasonMalformedPacket: 3,
	} {
		got, err := (&Connack{ReasonCode: code}).AppendTo(nil, Version311)
		if err != nil || got[3] != want {
			t.Errorf("CONNACK %v in 3.1.1: % x, %v; want return code %d", code, got, err, want)
		}
	}
}

// TestDecodeReuse checks that decoding into a used packet leaves nothing of
// the previous one, since the gateway may decode into the same value again.
func TestDecodeReuse(t *testing.T) {
	for _, g := range allGolden() {
		for _, other := range allGolden() {
			if other.packet.Type() != g.packet.Type() || other.version != g.version {
				continue
			}
			p := newPacket(g.packet.Type())
			fh, n, _ := ParseFixedHeader(other.wire, 0)
			if err := p.Decode(other.version, fh, other.wire[n:], Limits{}); err != nil {
				t.Fatal(err)
			}
			fh, n, _ = ParseFixedHeader(g.wire, 0)
			if err := p.Decode(g.version, fh, g.wire[n:], Limits{}); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, g.packet) {
				t.Errorf("%s after %s:\n got %#v\nwant %#v", g.name, other.name, p, g.packet)
			}
		}
	}
}
