package packet

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

func TestParseFixedHeaderPartial(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		fh   FixedHeader
		n    int
		err  error
	}{
		{"empty", nil, FixedHeader{}, 0, ErrNeedMore},
		{"first byte only", raw(0x30), FixedHeader{}, 0, ErrNeedMore},
		{"length continues", raw(0x30, 0x80), FixedHeader{}, 0, ErrNeedMore},
		{"length continues thrice", raw(0x30, 0xFF, 0xFF, 0xFF), FixedHeader{}, 0, ErrNeedMore},
		{"header without body", raw(0x32, 10), FixedHeader{TypePublish, 0x02, 10}, 2, nil},
		{"zero length", raw(0xC0, 0), FixedHeader{TypePingreq, 0, 0}, 2, nil},
		{"two-byte length", raw(0x30, 0x80, 0x01), FixedHeader{TypePublish, 0, 128}, 3, nil},
		{"largest length", raw(0x30, 0xFF, 0xFF, 0xFF, 0x7F), FixedHeader{TypePublish, 0, MaxRemaining}, 5, nil},
		{"three-byte boundary", raw(0x30, 0x80, 0x80, 0x01), FixedHeader{TypePublish, 0, 16384}, 4, nil},
		{"bad flags seen before the length", raw(0x61), FixedHeader{}, 0, errFlags},
		{"reserved type seen before the length", raw(0x00), FixedHeader{}, 0, errReservedType},
		{"QoS 3 seen before the length", raw(0x36), FixedHeader{}, 0, errQoS3},
		{"fifth length byte", raw(0x30, 0x80, 0x80, 0x80, 0x80), FixedHeader{}, 0, errVarintLong},
	}
	for _, c := range cases {
		fh, n, err := ParseFixedHeader(c.in, 0)
		if fh != c.fh || n != c.n || !errors.Is(err, c.err) {
			t.Errorf("%s: got %+v, %d, %v; want %+v, %d, %v", c.name, fh, n, err, c.fh, c.n, c.err)
		}
	}
}

// TestParseFixedHeaderMaxSize checks that the size limit applies to the
// whole packet and is enforced from the header alone.
func TestParseFixedHeaderMaxSize(t *testing.T) {
	// A header announcing 100 bytes of body: 102 bytes in all.
	hdr := raw(0x30, 100)
	if _, _, err := ParseFixedHeader(hdr, 102); err != nil {
		t.Errorf("packet of exactly maxSize refused: %v", err)
	}
	_, _, err := ParseFixedHeader(hdr, 101)
	if !errors.Is(err, ErrPacketTooLarge) || CodeOf(err) != ReasonPacketTooLarge {
		t.Errorf("packet over maxSize: %v", err)
	}
	// The largest possible announcement, with no body behind it.
	if _, _, err := ParseFixedHeader(raw(0x30, 0xFF, 0xFF, 0xFF, 0x7F), 4096); !errors.Is(err, ErrPacketTooLarge) {
		t.Errorf("256 MiB announcement with a 4 KiB limit: %v", err)
	}
}

func TestVarint(t *testing.T) {
	for _, v := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MaxRemaining} {
		b := appendVarint(nil, v)
		if len(b) != varintLen(v) {
			t.Errorf("%d: %d bytes, varintLen says %d", v, len(b), varintLen(v))
		}
		got, n, err := parseVarint(b)
		if got != v || n != len(b) || err != nil {
			t.Errorf("%d: parsed back as %d, %d, %v", v, got, n, err)
		}
	}
}

func TestReadPacket(t *testing.T) {
	var stream bytes.Buffer
	for _, g := range goldenV5 {
		stream.Write(g.wire)
	}
	for _, g := range goldenV5 {
		p, err := ReadPacket(&stream, Version5, 0)
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		if !reflect.DeepEqual(p, g.packet) {
			t.Fatalf("%s: got %#v", g.name, p)
		}
	}
	if _, err := ReadPacket(&stream, Version5, 0); err != io.EOF {
		t.Errorf("at the end of the stream: %v, want io.EOF", err)
	}
	for _, in := range [][]byte{raw(0x30), raw(0x30, 0x80), raw(0x30, 5, 0, 1)} {
		if _, err := ReadPacket(bytes.NewReader(in), Version5, 0); err != io.ErrUnexpectedEOF {
			t.Errorf("% x: %v, want io.ErrUnexpectedEOF", in, err)
		}
	}
	big := raw(0x30, 0xFF, 0xFF, 0xFF, 0x7F)
	if _, err := ReadPacket(bytes.NewReader(big), Version5, 1024); !errors.Is(err, ErrPacketTooLarge) {
		t.Errorf("oversized packet: %v", err)
	}
	if _, err := ReadPacket(bytes.NewReader(raw(0x30, 0x80, 0x80, 0x80, 0x80, 0x01)), Version5, 0); CodeOf(err) != ReasonMalformedPacket {
		t.Errorf("5-byte length: %v", err)
	}
}

func TestWritePacket(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePacket(&buf, &Puback{PacketID: 9}, Version311); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), raw(0x40, 2, 0, 9)) {
		t.Errorf("wrote % x", buf.Bytes())
	}
	if err := WritePacket(&buf, &Puback{}, Version311); !errors.Is(err, ReasonProtocolError) {
		t.Errorf("packet id 0: %v", err)
	}
}

// TestDecodeMisuse checks the errors for a caller's mistakes rather than
// the peer's.
func TestDecodeMisuse(t *testing.T) {
	body := raw(0, 7)
	if err := new(Puback).Decode(Version5, FixedHeader{Type: TypePubrec, Remaining: 2}, body, Limits{}); !errors.Is(err, errWrongType) {
		t.Errorf("wrong type: %v", err)
	}
	if err := new(Puback).Decode(Version5, FixedHeader{Type: TypePuback, Remaining: 3}, body, Limits{}); !errors.Is(err, errBodyLength) {
		t.Errorf("short body: %v", err)
	}
	if err := new(Puback).Decode(6, FixedHeader{Type: TypePuback, Remaining: 2}, body, Limits{}); !errors.Is(err, errVersion) {
		t.Errorf("version 6: %v", err)
	}
	if err := new(Pubrel).Decode(Version5, FixedHeader{Type: TypePubrel, Remaining: 2}, body, Limits{}); !errors.Is(err, errFlags) {
		t.Errorf("hand-made header with wrong flags: %v", err)
	}
	if _, err := Decode(Version5, FixedHeader{Type: 0}, nil); !errors.Is(err, errReservedType) {
		t.Errorf("type 0: %v", err)
	}
}

// TestConnectVersionOnError checks that a refused CONNECT still reports the
// level it asked for, which decides the form of the CONNACK.
func TestConnectVersionOnError(t *testing.T) {
	wire := raw(0x10, 12, 0, 4, "MQTT", 4, 0, 0, 0, 0, 0) // empty id, no clean session
	fh, n, _ := ParseFixedHeader(wire, 0)
	var c Connect
	err := c.Decode(0, fh, wire[n:], Limits{})
	if CodeOf(err) != ReasonClientIdentifierNotValid || c.Version != Version311 {
		t.Errorf("got %v, version %d", err, c.Version)
	}
	wire = raw(0x10, 12, 0, 4, "MQTT", 9, 2, 0, 0, 0, 0)
	fh, n, _ = ParseFixedHeader(wire, 0)
	err = c.Decode(0, fh, wire[n:], Limits{})
	if CodeOf(err) != ReasonUnsupportedProtocolVersion || c.Version != 9 {
		t.Errorf("got %v, version %d", err, c.Version)
	}
}
