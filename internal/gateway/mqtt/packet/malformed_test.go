package packet

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

type malformedCase struct {
	name    string
	version byte
	wire    []byte // a whole packet
	want    ReasonCode
}

const (
	v31  = Version31
	v311 = Version311
	v5   = Version5
)

// connect5 builds a 5.0 CONNECT for client "c" around a hand-written
// property block (its length byte included).
func connect5(props ...any) []byte {
	p := raw(props...)
	return raw(0x10, vbi(6+1+1+2+len(p)+3), 0, 4, "MQTT", 5, 0x02, 0, 0, p, 0, 1, "c")
}

// vbi encodes n as a variable byte integer, for vectors too long to count
// by hand.
func vbi(n int) []byte { return appendVarint(nil, n) }

// publish5 builds a 5.0 QoS 0 PUBLISH to "t" around a property block.
func publish5(props ...any) []byte {
	p := raw(props...)
	return raw(0x30, vbi(3+len(p)), 0, 1, "t", p)
}

// userProps returns n User Property entries "k"="v".
func userProps(n int) []byte {
	return bytes.Repeat(raw(0x26, 0, 1, "k", 0, 1, "v"), n)
}

// subscribe builds a SUBSCRIBE with identifier 1 around a payload.
func subscribe(version byte, payload ...any) []byte {
	p := raw(payload...)
	if version >= Version5 {
		p = raw(0, p) // empty property block
	}
	return raw(0x82, vbi(2+len(p)), 0, 1, p)
}

// filters returns n copies of topic filter "a" with QoS 0.
func filters(n int) []byte { return bytes.Repeat(raw(0, 1, "a", 0), n) }

var malformedCases = []malformedCase{
	// Fixed header.
	{"reserved type 0", v311, raw(0x00, 0), ReasonMalformedPacket},
	{"remaining length of 5 bytes", v311, raw(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), ReasonMalformedPacket},
	{"remaining length padded", v311, raw(0x30, 0x80, 0x00), ReasonMalformedPacket},
	{"PUBREL flags 0", v311, raw(0x60, 2, 0, 1), ReasonMalformedPacket},
	{"SUBSCRIBE flags 0", v311, raw(0x80, 6, 0, 1, 0, 1, "a", 0), ReasonMalformedPacket},
	{"UNSUBSCRIBE flags 3", v311, raw(0xA3, 5, 0, 1, 0, 1, "a"), ReasonMalformedPacket},
	{"CONNECT flag bit", v311, raw(0x11, 0), ReasonMalformedPacket},
	{"PUBACK flag bit", v5, raw(0x48, 2, 0, 1), ReasonMalformedPacket},
	{"PUBLISH QoS 3", v311, raw(0x36, 5, 0, 1, "t", 0, 1), ReasonMalformedPacket},
	{"PINGREQ with a body", v311, raw(0xC0, 1, 0), ReasonMalformedPacket},
	{"PINGRESP with a body", v5, raw(0xD0, 1, 0), ReasonMalformedPacket},
	{"AUTH in 3.1.1", v311, raw(0xF0, 0), ReasonMalformedPacket},

	// CONNECT.
	{"protocol name MQTX", v311, raw(0x10, 12, 0, 4, "MQTX", 4, 2, 0, 0, 0, 0), ReasonUnsupportedProtocolVersion},
	{"protocol level 6", v311, raw(0x10, 12, 0, 4, "MQTT", 6, 2, 0, 0, 0, 0), ReasonUnsupportedProtocolVersion},
	{"protocol level 2", v311, raw(0x10, 12, 0, 4, "MQTT", 2, 2, 0, 0, 0, 0), ReasonUnsupportedProtocolVersion},
	{"MQTT at level 3", v311, raw(0x10, 13, 0, 4, "MQTT", 3, 2, 0, 0, 0, 1, "c"), ReasonUnsupportedProtocolVersion},
	{"MQIsdp at level 4", v311, raw(0x10, 15, 0, 6, "MQIsdp", 4, 2, 0, 0, 0, 1, "c"), ReasonUnsupportedProtocolVersion},
	{"protocol name truncated", v311, raw(0x10, 3, 0, 4, "M"), ReasonMalformedPacket},
	{"connect flags missing", v311, raw(0x10, 7, 0, 4, "MQTT", 4), ReasonMalformedPacket},
	{"reserved connect flag", v311, raw(0x10, 13, 0, 4, "MQTT", 4, 0x03, 0, 0, 0, 1, "c"), ReasonMalformedPacket},
	{"will QoS 3", v311, raw(0x10, 13, 0, 4, "MQTT", 4, 0x1E, 0, 0, 0, 1, "c"), ReasonMalformedPacket},
	{"will QoS without will", v311, raw(0x10, 13, 0, 4, "MQTT", 4, 0x0A, 0, 0, 0, 1, "c"), ReasonMalformedPacket},
	{"will retain without will", v5, raw(0x10, 14, 0, 4, "MQTT", 5, 0x22, 0, 0, 0, 0, 1, "c"), ReasonMalformedPacket},
	{"password without user name", v311, raw(0x10, 16, 0, 4, "MQTT", 4, 0x42, 0, 0, 0, 1, "c", 0, 1, "p"), ReasonMalformedPacket},
	{"keep alive truncated", v311, raw(0x10, 9, 0, 4, "MQTT", 4, 2, 0), ReasonMalformedPacket},
	{"client id missing", v311, raw(0x10, 10, 0, 4, "MQTT", 4, 2, 0, 0), ReasonMalformedPacket},
	{"client id longer than packet", v311, raw(0x10, 13, 0, 4, "MQTT", 4, 2, 0, 0, 0, 9, "c"), ReasonMalformedPacket},
	{"client id invalid UTF-8", v311, raw(0x10, 13, 0, 4, "MQTT", 4, 2, 0, 0, 0, 1, 0xFF), ReasonMalformedPacket},
	{"client id U+0000", v311, raw(0x10, 14, 0, 4, "MQTT", 4, 2, 0, 0, 0, 2, "a", 0), ReasonMalformedPacket},
	{"client id surrogate", v311, raw(0x10, 15, 0, 4, "MQTT", 4, 2, 0, 0, 0, 3, 0xED, 0xA0, 0x80), ReasonMalformedPacket},
	{"client id overlong", v311, raw(0x10, 14, 0, 4, "MQTT", 4, 2, 0, 0, 0, 2, 0xC0, 0xAF), ReasonMalformedPacket},
	{"client id truncated rune", v311, raw(0x10, 13, 0, 4, "MQTT", 4, 2, 0, 0, 0, 1, 0xE2), ReasonMalformedPacket},
	{"empty client id without clean session", v311, raw(0x10, 12, 0, 4, "MQTT", 4, 0, 0, 0, 0, 0), ReasonClientIdentifierNotValid},
	{"3.1 empty client id", v31, raw(0x10, 14, 0, 6, "MQIsdp", 3, 2, 0, 0, 0, 0), ReasonClientIdentifierNotValid},
	{"3.1 client id of 24", v31, raw(0x10, 38, 0, 6, "MQIsdp", 3, 2, 0, 0, 0, 24, strings.Repeat("c", 24)), ReasonClientIdentifierNotValid},
	{"trailing bytes", v311, raw(0x10, 14, 0, 4, "MQTT", 4, 2, 0, 0, 0, 1, "c", 0), ReasonMalformedPacket},
	{"will topic wildcard", v311, raw(0x10, 21, 0, 4, "MQTT", 4, 0x06, 0, 0, 0, 1, "c", 0, 3, "a/#", 0, 1, "x"), ReasonTopicNameInvalid},
	{"will topic empty", v311, raw(0x10, 18, 0, 4, "MQTT", 4, 0x06, 0, 0, 0, 1, "c", 0, 0, 0, 1, "x"), ReasonTopicNameInvalid},
	{"will payload truncated", v311, raw(0x10, 19, 0, 4, "MQTT", 4, 0x06, 0, 0, 0, 1, "c", 0, 1, "w", 0, 5, "x"), ReasonMalformedPacket},
	{"user name missing", v311, raw(0x10, 13, 0, 4, "MQTT", 4, 0x82, 0, 0, 0, 1, "c"), ReasonMalformedPacket},
	{"properties missing", v5, raw(0x10, 10, 0, 4, "MQTT", 5, 2, 0, 0), ReasonMalformedPacket},

	// Properties (in CONNECT unless named).
	{"property length past the end", v5, connect5(9, 0x11, 0, 0, 0, 1), ReasonMalformedPacket},
	{"property length 5 bytes", v5, connect5(0x80, 0x80, 0x80, 0x80, 0x01), ReasonMalformedPacket},
	{"property value truncated", v5, connect5(3, 0x11, 0, 0), ReasonMalformedPacket},
	{"property value spills out of block", v5, connect5(2, 0x21, 0, 5), ReasonMalformedPacket},
	{"unknown property", v5, connect5(2, 0x05, 0), ReasonMalformedPacket},
	{"property id 0", v5, connect5(2, 0x00, 0), ReasonMalformedPacket},
	{"property id over a byte", v5, connect5(3, 0x81, 0x01, 0), ReasonMalformedPacket},
	{"property id padded", v5, connect5(4, 0x91, 0x00, 0, 20), ReasonMalformedPacket},
	{"topic alias in CONNECT", v5, connect5(3, 0x23, 0, 1), ReasonMalformedPacket},
	{"will delay in CONNECT", v5, connect5(5, 0x18, 0, 0, 0, 1), ReasonMalformedPacket},
	{"duplicate session expiry", v5, connect5(10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2), ReasonProtocolError},
	{"duplicate authentication method", v5, connect5(8, 0x15, 0, 1, "a", 0x15, 0, 1, "b"), ReasonProtocolError},
	{"receive maximum 0", v5, connect5(3, 0x21, 0, 0), ReasonProtocolError},
	{"maximum packet size 0", v5, connect5(5, 0x27, 0, 0, 0, 0), ReasonProtocolError},
	{"request problem information 2", v5, connect5(2, 0x17, 2), ReasonProtocolError},
	{"request response information 2", v5, connect5(2, 0x19, 2), ReasonProtocolError},
	{"authentication data without method", v5, connect5(4, 0x16, 0, 1, 9), ReasonProtocolError},
	{"user property 33", v5, connect5(vbi(7*33), userProps(33)), ReasonQuotaExceeded},
	{"user property invalid UTF-8", v5, connect5(7, 0x26, 0, 1, "k", 0, 1, 0xC3), ReasonMalformedPacket},
	{"user property value missing", v5, connect5(4, 0x26, 0, 1, "k"), ReasonMalformedPacket},
	{"session expiry in will", v5, raw(0x10, 25, 0, 4, "MQTT", 5, 0x06, 0, 0, 0, 0, 1, "c",
		5, 0x11, 0, 0, 0, 1, 0, 1, "w", 0, 0), ReasonMalformedPacket},
	{"duplicate will delay", v5, raw(0x10, 30, 0, 4, "MQTT", 5, 0x06, 0, 0, 0, 0, 1, "c",
		10, 0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 1, 0, 1, "w", 0, 0), ReasonProtocolError},

	// PUBLISH.
	{"topic with +", v311, raw(0x30, 5, 0, 3, "a/+"), ReasonTopicNameInvalid},
	{"topic #", v311, raw(0x30, 3, 0, 1, "#"), ReasonTopicNameInvalid},
	{"topic wildcard in 5.0", v5, raw(0x30, 6, 0, 3, "a/#", 0), ReasonTopicNameInvalid},
	{"empty topic in 3.1.1", v311, raw(0x30, 3, 0, 0, "x"), ReasonProtocolError},
	{"empty topic without alias", v5, raw(0x30, 4, 0, 0, 0, "x"), ReasonProtocolError},
	{"topic invalid UTF-8", v311, raw(0x30, 4, 0, 2, 0xF8, 0x88), ReasonMalformedPacket},
	{"topic truncated", v311, raw(0x30, 3, 0, 5, "a"), ReasonMalformedPacket},
	{"topic length truncated", v311, raw(0x30, 1, 0), ReasonMalformedPacket},
	{"packet id 0", v311, raw(0x32, 5, 0, 1, "t", 0, 0), ReasonProtocolError},
	{"packet id missing", v311, raw(0x32, 4, 0, 1, "t", 0), ReasonMalformedPacket},
	{"DUP at QoS 0", v311, raw(0x38, 3, 0, 1, "t"), ReasonProtocolError},
	{"properties missing in 5.0", v5, raw(0x30, 3, 0, 1, "t"), ReasonMalformedPacket},
	{"topic alias 0", v5, publish5(3, 0x23, 0, 0), ReasonProtocolError},
	{"payload format 2", v5, publish5(2, 0x01, 2), ReasonProtocolError},
	{"subscription identifier 0", v5, publish5(2, 0x0B, 0), ReasonProtocolError},
	{"subscription identifier truncated", v5, publish5(2, 0x0B, 0x80), ReasonMalformedPacket},
	{"duplicate topic alias", v5, publish5(6, 0x23, 0, 1, 0x23, 0, 2), ReasonProtocolError},
	{"duplicate message expiry", v5, publish5(10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1), ReasonProtocolError},
	{"response topic with wildcard", v5, publish5(4, 0x08, 0, 1, "+"), ReasonProtocolError},
	{"response topic empty", v5, publish5(3, 0x08, 0, 0), ReasonProtocolError},
	{"session expiry in PUBLISH", v5, publish5(5, 0x11, 0, 0, 0, 1), ReasonMalformedPacket},
	{"reason string in PUBLISH", v5, publish5(4, 0x1F, 0, 1, "r"), ReasonMalformedPacket},
	{"too many properties", v5, publish5(vbi(2*65), bytes.Repeat(raw(0x0B, 1), 65)), ReasonQuotaExceeded},
	{"correlation data truncated", v5, publish5(4, 0x09, 0, 5, 1), ReasonMalformedPacket},

	// Publish acknowledgements.
	{"PUBACK too short", v311, raw(0x40, 1, 0), ReasonMalformedPacket},
	{"PUBACK too long in 3.1.1", v311, raw(0x40, 3, 0, 1, 0), ReasonMalformedPacket},
	{"PUBACK packet id 0", v311, raw(0x40, 2, 0, 0), ReasonProtocolError},
	{"PUBACK reason code 0x05", v5, raw(0x40, 3, 0, 1, 0x05), ReasonProtocolError},
	{"PUBACK reason code 0x92", v5, raw(0x40, 3, 0, 1, 0x92), ReasonProtocolError},
	{"PUBREL reason code 0x10", v5, raw(0x62, 3, 0, 1, 0x10), ReasonProtocolError},
	{"PUBCOMP reason code 0x80", v5, raw(0x70, 3, 0, 1, 0x80), ReasonProtocolError},
	{"PUBREC duplicate reason string", v5, raw(0x50, 12, 0, 1, 0x80, 8, 0x1F, 0, 1, "a", 0x1F, 0, 1, "b"), ReasonProtocolError},
	{"PUBACK topic alias", v5, raw(0x40, 7, 0, 1, 0, 3, 0x23, 0, 1), ReasonMalformedPacket},
	{"PUBACK trailing after properties", v5, raw(0x40, 5, 0, 1, 0, 0, 0), ReasonMalformedPacket},

	// SUBSCRIBE and UNSUBSCRIBE.
	{"SUBSCRIBE no filters", v311, subscribe(v311), ReasonProtocolError},
	{"SUBSCRIBE no filters in 5.0", v5, subscribe(v5), ReasonProtocolError},
	{"SUBSCRIBE packet id 0", v311, raw(0x82, 6, 0, 0, 0, 1, "a", 0), ReasonProtocolError},
	{"SUBSCRIBE options missing", v311, subscribe(v311, 0, 1, "a"), ReasonMalformedPacket},
	{"SUBSCRIBE reserved option bits", v311, subscribe(v311, 0, 1, "a", 0x04), ReasonMalformedPacket},
	{"SUBSCRIBE reserved option bits in 5.0", v5, subscribe(v5, 0, 1, "a", 0x40), ReasonMalformedPacket},
	{"SUBSCRIBE QoS 3", v5, subscribe(v5, 0, 1, "a", 0x03), ReasonMalformedPacket},
	{"SUBSCRIBE retain handling 3", v5, subscribe(v5, 0, 1, "a", 0x30), ReasonProtocolError},
	{"SUBSCRIBE # not last", v311, subscribe(v311, 0, 5, "a/#/b", 0), ReasonTopicFilterInvalid},
	{"SUBSCRIBE # inside a level", v311, subscribe(v311, 0, 4, "a/b#", 0), ReasonTopicFilterInvalid},
	{"SUBSCRIBE + inside a level", v311, subscribe(v311, 0, 2, "a+", 0), ReasonTopicFilterInvalid},
	{"SUBSCRIBE empty filter", v311, subscribe(v311, 0, 0, 0), ReasonTopicFilterInvalid},
	{"SUBSCRIBE filter invalid UTF-8", v311, subscribe(v311, 0, 1, 0x80, 0), ReasonMalformedPacket},
	{"SUBSCRIBE shared without name", v5, subscribe(v5, 0, 9, "$share//x", 0), ReasonTopicFilterInvalid},
	{"SUBSCRIBE shared without filter", v5, subscribe(v5, 0, 8, "$share/g", 0), ReasonTopicFilterInvalid},
	{"SUBSCRIBE shared empty filter", v5, subscribe(v5, 0, 9, "$share/g/", 0), ReasonTopicFilterInvalid},
	{"SUBSCRIBE shared name with +", v5, subscribe(v5, 0, 11, "$share/g+/x", 0), ReasonTopicFilterInvalid},
	{"SUBSCRIBE shared with no local", v5, subscribe(v5, 0, 10, "$share/g/x", 0x04), ReasonProtocolError},
	{"SUBSCRIBE two subscription identifiers", v5, raw(0x82, 11, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, "a", 0), ReasonProtocolError},
	{"SUBSCRIBE subscription identifier 0", v5, raw(0x82, 9, 0, 1, 2, 0x0B, 0, 0, 1, "a", 0), ReasonProtocolError},
	{"SUBSCRIBE reason string", v5, raw(0x82, 11, 0, 1, 4, 0x1F, 0, 1, "r", 0, 1, "a", 0), ReasonMalformedPacket},
	{"SUBSCRIBE 65 filters", v311, subscribe(v311, filters(65)), ReasonQuotaExceeded},
	{"UNSUBSCRIBE no filters", v311, raw(0xA2, 2, 0, 1), ReasonProtocolError},
	{"UNSUBSCRIBE bad filter", v311, raw(0xA2, 6, 0, 1, 0, 2, "#a"), ReasonTopicFilterInvalid},
	{"UNSUBSCRIBE filter truncated", v311, raw(0xA2, 5, 0, 1, 0, 2, "a"), ReasonMalformedPacket},
	{"UNSUBSCRIBE subscription identifier", v5, raw(0xA2, 8, 0, 1, 2, 0x0B, 1, 0, 1, "a"), ReasonMalformedPacket},

	// SUBACK and UNSUBACK.
	{"SUBACK no codes", v311, raw(0x90, 2, 0, 1), ReasonProtocolError},
	{"SUBACK return code 3", v311, raw(0x90, 3, 0, 1, 0x03), ReasonProtocolError},
	{"SUBACK return code 0x87 in 3.1.1", v311, raw(0x90, 3, 0, 1, 0x87), ReasonProtocolError},
	{"SUBACK reason code 0x04", v5, raw(0x90, 4, 0, 1, 0, 0x04), ReasonProtocolError},
	{"SUBACK packet id 0", v5, raw(0x90, 4, 0, 0, 0, 0x00), ReasonProtocolError},
	{"UNSUBACK codes in 3.1.1", v311, raw(0xB0, 3, 0, 1, 0), ReasonMalformedPacket},
	{"UNSUBACK no codes", v5, raw(0xB0, 3, 0, 1, 0), ReasonProtocolError},
	{"UNSUBACK reason code 0x10", v5, raw(0xB0, 4, 0, 1, 0, 0x10), ReasonProtocolError},

	// CONNACK.
	{"CONNACK reserved flag", v311, raw(0x20, 2, 0x02, 0), ReasonMalformedPacket},
	{"CONNACK return code 6", v311, raw(0x20, 2, 0, 6), ReasonProtocolError},
	{"CONNACK too long in 3.1.1", v311, raw(0x20, 3, 0, 0, 0), ReasonMalformedPacket},
	{"CONNACK too short", v311, raw(0x20, 1, 0), ReasonMalformedPacket},
	{"CONNACK session present on refusal", v311, raw(0x20, 2, 1, 5), ReasonProtocolError},
	{"CONNACK properties missing", v5, raw(0x20, 2, 0, 0), ReasonMalformedPacket},
	{"CONNACK reason code 0x10", v5, raw(0x20, 3, 0, 0x10, 0), ReasonProtocolError},
	{"CONNACK maximum QoS 2", v5, raw(0x20, 5, 0, 0, 2, 0x24, 2), ReasonProtocolError},
	{"CONNACK retain available 2", v5, raw(0x20, 5, 0, 0, 2, 0x25, 2), ReasonProtocolError},
	{"CONNACK request problem information", v5, raw(0x20, 5, 0, 0, 2, 0x17, 1), ReasonMalformedPacket},
	{"CONNACK duplicate server keep alive", v5, raw(0x20, 9, 0, 0, 6, 0x13, 0, 1, 0x13, 0, 1), ReasonProtocolError},

	// DISCONNECT and AUTH.
	{"DISCONNECT body in 3.1.1", v311, raw(0xE0, 1, 0), ReasonMalformedPacket},
	{"DISCONNECT reason code 0x05", v5, raw(0xE0, 1, 0x05), ReasonProtocolError},
	{"DISCONNECT reason code 0x84", v5, raw(0xE0, 1, 0x84), ReasonProtocolError},
	{"DISCONNECT topic alias", v5, raw(0xE0, 5, 0, 3, 0x23, 0, 1), ReasonMalformedPacket},
	{"DISCONNECT trailing", v5, raw(0xE0, 3, 0, 0, 0), ReasonMalformedPacket},
	{"AUTH reason code 0x01", v5, raw(0xF0, 2, 0x01, 0), ReasonProtocolError},
	{"AUTH without method", v5, raw(0xF0, 2, 0x18, 0), ReasonProtocolError},
	{"AUTH reason code only", v5, raw(0xF0, 1, 0x18), ReasonMalformedPacket},
	{"AUTH data without method", v5, raw(0xF0, 6, 0x18, 4, 0x16, 0, 1, 1), ReasonProtocolError},
}

// TestMalformed checks every case fails, at the header or in Decode, with
// the expected reason code and an *Error.
func TestMalformed(t *testing.T) {
	for _, c := range malformedCases {
		t.Run(c.name, func(t *testing.T) {
			err := decodeWhole(c.version, c.wire)
			if err == nil {
				t.Fatalf("decoded % x without error", c.wire)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if got := CodeOf(err); got != c.want {
				t.Fatalf("got %v (%v), want %v", got, err, c.want)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("errors.Is(%v, %v) is false", err, c.want)
			}
		})
	}
}

// decodeWhole parses the header and decodes a packet that must be complete.
func decodeWhole(version byte, wire []byte) error {
	fh, n, err := ParseFixedHeader(wire, 0)
	if err != nil {
		return err
	}
	if n+fh.Remaining != len(wire) {
		panic("test vector length disagrees with its remaining length")
	}
	_, err = Decode(version, fh, wire[n:])
	return err
}

// TestLimits checks that Limits raise and lower the defaults.
func TestLimits(t *testing.T) {
	lim := Limits{MaxProperties: 2, MaxUserProperties: 1, MaxTopicFilters: 1}
	cases := []struct {
		name string
		lim  Limits
		wire []byte
		want ReasonCode
	}{
		{"3 properties over 2", lim, publish5(7, 0x0B, 1, 0x0B, 2, 0x23, 0, 1), ReasonQuotaExceeded},
		{"2 properties", lim, publish5(4, 0x0B, 1, 0x0B, 2), ReasonSuccess},
		{"2 user properties over 1", lim, publish5(14, userProps(2)), ReasonQuotaExceeded},
		{"2 filters over 1", lim, subscribe(v5, filters(2)), ReasonQuotaExceeded},
		{"2 SUBACK codes over 1", lim, raw(0x90, 5, 0, 1, 0, 0, 0), ReasonQuotaExceeded},
		{"40 user properties under 50", Limits{MaxUserProperties: 50}, publish5(vbi(7*40), userProps(40)), ReasonSuccess},
		{"100 filters under 200", Limits{MaxTopicFilters: 200}, subscribe(v311, filters(100)), ReasonSuccess},
	}
	for _, c := range cases {
		version := v5
		if c.name == "100 filters under 200" {
			version = v311
		}
		fh, n, err := ParseFixedHeader(c.wire, 0)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		_, err = c.lim.Decode(version, fh, c.wire[n:])
		if got := CodeOf(err); got != c.want {
			t.Errorf("%s: got %v (%v), want %v", c.name, got, err, c.want)
		}
	}
}
