package packet_test

import (
	"errors"
	"fmt"

	"github.com/heraldpush/herald/internal/gateway/mqtt/packet"
)

// This is the shape of a gateway's read path: bytes arrive in pieces, the
// fixed header is parsed from whatever is buffered, the size is checked
// before the body is waited for, and each complete packet is decoded.
func Example() {
	stream := []byte{
		0xC0, 0x00, // PINGREQ
		0x40, 0x02, 0x00, 0x2A, // PUBACK for packet 42
		0x30, 0x0A, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o', // PUBLISH
	}
	const maxSize = 4096
	var buf []byte
	for _, c := range stream { // one byte at a time, the worst case
		buf = append(buf, c)
		fh, n, err := packet.ParseFixedHeader(buf, maxSize)
		if errors.Is(err, packet.ErrNeedMore) || err == nil && len(buf) < n+fh.Remaining {
			continue // wait for more bytes
		}
		if err != nil {
			fmt.Println("close with", packet.CodeOf(err))
			return
		}
		p, err := packet.Decode(packet.Version311, fh, buf[n:n+fh.Remaining])
		if err != nil {
			fmt.Println("close with", packet.CodeOf(err))
			return
		}
		switch p := p.(type) {
		case *packet.Puback:
			fmt.Println("acknowledged", p.PacketID)
		case *packet.Publish:
			fmt.Printf("%s: %s\n", p.Topic, p.Payload)
		default:
			fmt.Println(p.Type())
		}
		buf = buf[:0]
	}
	// Output:
	// PINGREQ
	// acknowledged 42
	// a/b: hello
}

// Encoding appends to a buffer the caller owns and reuses.
func ExamplePublish_AppendTo() {
	buf := make([]byte, 0, 512)
	pub := &packet.Publish{Topic: "devices/r1", Payload: []byte(`{"id":"m1"}`), QoS: 1, PacketID: 7}
	buf, err := pub.AppendTo(buf[:0], packet.Version5)
	if err != nil {
		panic(err)
	}
	fmt.Printf("% x\n", buf[:4])
	// Output:
	// 32 1a 00 0a
}

// A refusal is answered in the client's own version: Connack carries the
// 5.0 reason code and writes the 3.1.1 return code when asked to.
func ExampleConnack_AppendTo() {
	refuse := &packet.Connack{ReasonCode: packet.ReasonBadUserNameOrPassword}
	v3, _ := refuse.AppendTo(nil, packet.Version311)
	v5, _ := refuse.AppendTo(nil, packet.Version5)
	fmt.Printf("3.1.1: % x\n5.0:   % x\n", v3, v5)
	// Output:
	// 3.1.1: 20 02 00 04
	// 5.0:   20 03 00 86 00
}
