package packet

import (
	"errors"
	"strings"
	"testing"
)

// TestEncodeErrors checks that AppendTo refuses what Decode would refuse,
// leaving dst as it was.
func TestEncodeErrors(t *testing.T) {
	big := make([]byte, MaxRemaining)
	cases := []struct {
		name    string
		version byte
		p       Packet
		want    ReasonCode
	}{
		{"version 2", 2, &Pingresp{}, ReasonProtocolError},
		{"version 6", 6, &Publish{Topic: "t"}, ReasonProtocolError},
		{"PUBLISH QoS 3", v311, &Publish{Topic: "t", QoS: 3, PacketID: 1}, ReasonMalformedPacket},
		{"PUBLISH without packet id", v311, &Publish{Topic: "t", QoS: 1}, ReasonProtocolError},
		{"PUBLISH DUP at QoS 0", v311, &Publish{Topic: "t", Dup: true}, ReasonProtocolError},
		{"PUBLISH wildcard topic", v5, &Publish{Topic: "a/+"}, ReasonTopicNameInvalid},
		{"PUBLISH empty topic", v311, &Publish{Properties: Properties{TopicAlias: 1}}, ReasonProtocolError},
		{"PUBLISH topic U+0000", v311, &Publish{Topic: "a\x00"}, ReasonMalformedPacket},
		{"PUBLISH topic too long", v311, &Publish{Topic: strings.Repeat("t", 65536)}, ReasonProtocolError},
		{"PUBLISH too large", v311, &Publish{Topic: "t", Payload: big}, ReasonPacketTooLarge},
		{"PUBLISH session expiry", v5, &Publish{Topic: "t", Properties: Properties{SessionExpiry: new(uint32(1))}}, ReasonProtocolError},
		{"PUBLISH payload format 2", v5, &Publish{Topic: "t", Properties: Properties{PayloadFormat: 2}}, ReasonProtocolError},
		{"PUBLISH subscription id 0", v5, &Publish{Topic: "t", Properties: Properties{SubscriptionIDs: []uint32{0}}}, ReasonProtocolError},
		{"PUBLISH subscription id too big", v5, &Publish{Topic: "t", Properties: Properties{SubscriptionIDs: []uint32{MaxRemaining + 1}}}, ReasonProtocolError},
		{"PUBLISH response topic wildcard", v5, &Publish{Topic: "t", Properties: Properties{ResponseTopic: "#"}}, ReasonProtocolError},
		{"PUBLISH user property bad UTF-8", v5, &Publish{Topic: "t", Properties: Properties{User: []UserProperty{{"k", "\xff"}}}}, ReasonMalformedPacket},
		{"PUBLISH correlation data too long", v5, &Publish{Topic: "t", Properties: Properties{CorrelationData: make([]byte, 65536)}}, ReasonProtocolError},
		{"PUBACK packet id 0", v5, &Puback{}, ReasonProtocolError},
		{"PUBACK reason code 0x92", v5, &Puback{PacketID: 1, ReasonCode: ReasonPacketIdentifierNotFound}, ReasonProtocolError},
		{"PUBREL reason code 0x10", v5, &Pubrel{PacketID: 1, ReasonCode: ReasonNoMatchingSubscribers}, ReasonProtocolError},
		{"PUBACK topic alias", v5, &Puback{PacketID: 1, Properties: Properties{TopicAlias: 1}}, ReasonProtocolError},
		{"CONNECT 3.1.1 empty id without clean session", v311, &Connect{}, ReasonClientIdentifierNotValid},
		{"CONNECT 3.1 long id", v31, &Connect{CleanStart: true, ClientID: strings.Repeat("c", 24)}, ReasonClientIdentifierNotValid},
		{"CONNECT password without user in 3.1.1", v311, &Connect{ClientID: "c", Password: []byte("p")}, ReasonMalformedPacket},
		{"CONNECT will QoS 3", v311, &Connect{ClientID: "c", Will: &Will{Topic: "w", QoS: 3}}, ReasonMalformedPacket},
		{"CONNECT will wildcard", v311, &Connect{ClientID: "c", Will: &Will{Topic: "w/#"}}, ReasonTopicNameInvalid},
		{"CONNECT will property in CONNECT", v5, &Connect{Properties: Properties{WillDelay: 1}}, ReasonProtocolError},
		{"CONNECT CONNECT property in will", v5, &Connect{Will: &Will{Topic: "w", Properties: Properties{ReceiveMaximum: 1}}}, ReasonProtocolError},
		{"CONNECT auth data without method", v5, &Connect{Properties: Properties{AuthenticationData: []byte{}}}, ReasonProtocolError},
		{"CONNECT bad user name", v5, &Connect{Username: "\xc0\xaf"}, ReasonMalformedPacket},
		{"CONNACK session present on refusal", v5, &Connack{SessionPresent: true, ReasonCode: ReasonBanned}, ReasonProtocolError},
		{"CONNACK reason code 0x10", v5, &Connack{ReasonCode: ReasonNoMatchingSubscribers}, ReasonProtocolError},
		{"CONNACK maximum QoS 2", v5, &Connack{Properties: Properties{MaximumQoS: new(byte(2))}}, ReasonProtocolError},
		{"SUBSCRIBE empty", v311, &Subscribe{PacketID: 1}, ReasonProtocolError},
		{"SUBSCRIBE packet id 0", v311, &Subscribe{Subscriptions: []Subscription{{Filter: "a"}}}, ReasonProtocolError},
		{"SUBSCRIBE bad filter", v311, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a#"}}}, ReasonTopicFilterInvalid},
		{"SUBSCRIBE QoS 3", v311, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", QoS: 3}}}, ReasonMalformedPacket},
		{"SUBSCRIBE retain handling 3", v5, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", RetainHandling: 3}}}, ReasonProtocolError},
		{"SUBSCRIBE shared no local", v5, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "$share/g/a", NoLocal: true}}}, ReasonProtocolError},
		{"SUBSCRIBE two subscription ids", v5, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a"}}, Properties: Properties{SubscriptionIDs: []uint32{1, 2}}}, ReasonProtocolError},
		{"SUBACK empty", v5, &Suback{PacketID: 1}, ReasonProtocolError},
		{"SUBACK reason code 0x92", v5, &Suback{PacketID: 1, ReasonCodes: []ReasonCode{0x92}}, ReasonProtocolError},
		{"SUBACK reason code 0x10 in 3.1.1", v311, &Suback{PacketID: 1, ReasonCodes: []ReasonCode{0x10}}, ReasonProtocolError},
		{"UNSUBSCRIBE empty", v5, &Unsubscribe{PacketID: 1}, ReasonProtocolError},
		{"UNSUBSCRIBE bad filter", v5, &Unsubscribe{PacketID: 1, Filters: []string{"+a"}}, ReasonTopicFilterInvalid},
		{"UNSUBACK empty in 5.0", v5, &Unsuback{PacketID: 1}, ReasonProtocolError},
		{"UNSUBACK packet id 0", v311, &Unsuback{}, ReasonProtocolError},
		{"DISCONNECT reason code 0x84", v5, &Disconnect{ReasonCode: ReasonUnsupportedProtocolVersion}, ReasonProtocolError},
		{"DISCONNECT assigned client id", v5, &Disconnect{Properties: Properties{AssignedClientID: "x"}}, ReasonProtocolError},
		{"AUTH in 3.1.1", v311, &Auth{}, ReasonMalformedPacket},
		{"AUTH without method", v5, &Auth{ReasonCode: ReasonContinueAuthentication}, ReasonProtocolError},
		{"AUTH reason code 0x80", v5, &Auth{ReasonCode: ReasonUnspecifiedError, Properties: Properties{AuthenticationMethod: "m"}}, ReasonProtocolError},
	}
	for _, c := range cases {
		dst := []byte("keep")
		got, err := c.p.AppendTo(dst, c.version)
		if CodeOf(err) != c.want {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: %v is not an *Error", c.name, err)
		}
		if string(got) != "keep" {
			t.Errorf("%s: dst changed to %q", c.name, got)
		}
	}
}

func TestCheckTopic(t *testing.T) {
	names := map[string]bool{
		"a": true, "a/b": true, "/": true, "a//b": true, "$SYS/x": true, "ü/☃": true,
		"": false, "a/+": false, "#": false, "a/#": false, "a+b": false, "a\x00": false, "\xff": false,
	}
	for s, ok := range names {
		if err := CheckTopicName(s); (err == nil) != ok {
			t.Errorf("CheckTopicName(%q) = %v", s, err)
		}
	}
	filters := []struct {
		s       string
		version byte
		ok      bool
	}{
		{"#", v311, true}, {"+", v311, true}, {"a/#", v311, true}, {"+/+/#", v311, true},
		{"/+", v311, true}, {"+/", v311, true}, {"a//+", v311, true}, {"$share/g/a", v5, true},
		{"$share/g/#", v5, true}, {"$share/g//", v5, true}, {"$share//a", v311, true}, {"$share", v5, true},
		{"", v311, false}, {"a#", v311, false}, {"#/a", v311, false}, {"a/#/", v311, false},
		{"a+", v311, false}, {"+a", v311, false}, {"a/++", v311, false}, {"$share//a", v5, false},
		{"$share/g", v5, false}, {"$share/g/", v5, false}, {"$share/#/a", v5, false}, {"$share/+/a", v5, false},
		{"$share/g/a#", v5, false}, {"a\x00", v5, false},
	}
	for _, f := range filters {
		if err := CheckTopicFilter(f.s, f.version); (err == nil) != f.ok {
			t.Errorf("CheckTopicFilter(%q, %d) = %v", f.s, f.version, err)
		}
	}
}

func TestReasonCode(t *testing.T) {
	if got := ReasonMalformedPacket.Error(); got != "Malformed Packet" {
		t.Errorf("Error() = %q", got)
	}
	if got := ReasonCode(0x42).String(); got != "Reason Code 0x42" {
		t.Errorf("unknown code: %q", got)
	}
	if ReasonGrantedQoS2.IsError() || !ReasonUnspecifiedError.IsError() {
		t.Error("IsError")
	}
	// Every code some packet allows has a name.
	for c := range 256 {
		code := ReasonCode(c)
		for typ := TypeConnect; typ <= TypeAuth; typ++ {
			if code.validFor(typ) && strings.HasPrefix(code.String(), "Reason Code") {
				t.Errorf("%#x is valid in %v but has no name", c, typ)
			}
		}
	}
	err := error(errTopicName)
	var rc ReasonCode
	if !errors.As(err, &rc) || rc != ReasonTopicNameInvalid {
		t.Errorf("errors.As: %v", rc)
	}
	if CodeOf(nil) != ReasonSuccess || CodeOf(errors.New("x")) != ReasonUnspecifiedError {
		t.Error("CodeOf")
	}
	if got := errTopicName.Error(); got != "packet: invalid topic name (Topic Name invalid)" {
		t.Errorf("Error() = %q", got)
	}
	for id := range PropertyID(0x2B) {
		if propScope(id) != 0 && id.String() == "Reserved Property" {
			t.Errorf("property %#x has no name", byte(id))
		}
	}
	for typ := range Type(16) {
		if (newPacket(typ) == nil) != (typ.String() == "RESERVED") {
			t.Errorf("type %d: %v", typ, typ)
		}
	}
}
