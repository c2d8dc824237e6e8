package packet

import (
	"bytes"
	"testing"
)

// pushPublish is what the gateway sends per message: a QoS 1 PUBLISH to a
// device's topic with a JSON payload of a few hundred bytes.
func pushPublish() *Publish {
	return &Publish{
		Topic:    "devices/0123456789abcdefghijkl",
		Payload:  bytes.Repeat([]byte("x"), 256),
		PacketID: 42,
		QoS:      1,
	}
}

// TestHotPathAllocs pins the promise in the package documentation: the
// per-message path of the gateway allocates nothing.
func TestHotPathAllocs(t *testing.T) {
	buf := make([]byte, 0, 1024)
	pub := pushPublish()
	pub5 := pushPublish()
	pub5.Properties.MessageExpiry = new(uint32(3600))
	ack := &Puback{PacketID: 42}
	ack5 := &Puback{PacketID: 42, ReasonCode: ReasonQuotaExceeded, Properties: Properties{ReasonString: "slow down"}}
	wire, _ := ack5.AppendTo(nil, Version5)
	fh, n, _ := ParseFixedHeader(wire, 0)
	body := wire[n:]
	var err error
	cases := map[string]func(){
		"PUBLISH 3.1.1": func() { buf, err = pub.AppendTo(buf[:0], Version311) },
		"PUBLISH 5.0":   func() { buf, err = pub5.AppendTo(buf[:0], Version5) },
		"PUBACK 3.1.1":  func() { buf, err = ack.AppendTo(buf[:0], Version311) },
		"PUBACK 5.0":    func() { buf, err = ack5.AppendTo(buf[:0], Version5) },
		"PINGRESP":      func() { buf, err = (&Pingresp{}).AppendTo(buf[:0], Version5) },
		"fixed header":  func() { _, _, err = ParseFixedHeader(wire, 4096) },
		"PUBACK decode": func() {
			var p Puback
			err = p.Decode(Version311, FixedHeader{Type: TypePuback, Remaining: 2}, body[:2], Limits{})
		},
	}
	for name, f := range cases {
		if allocs := testing.AllocsPerRun(100, f); allocs != 0 || err != nil {
			t.Errorf("%s: %v allocations, err %v", name, allocs, err)
		}
	}
	_ = fh
}

func benchAppend(b *testing.B, p Packet, version byte) {
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = p.AppendTo(buf[:0], version); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func benchDecode(b *testing.B, p Packet, version byte) {
	wire, err := p.AppendTo(nil, version)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(wire)))
	for b.Loop() {
		fh, n, err := ParseFixedHeader(wire, 4096)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(version, fh, wire[n:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublishAppend(b *testing.B) {
	b.Run("v3.1.1", func(b *testing.B) { benchAppend(b, pushPublish(), Version311) })
	b.Run("v5", func(b *testing.B) {
		p := pushPublish()
		p.Properties.MessageExpiry = new(uint32(3600))
		p.Properties.User = []UserProperty{{"msg_id", "01J9Z8X7Y6W5V4T3S2R1Q0P"}}
		benchAppend(b, p, Version5)
	})
}

func BenchmarkPublishDecode(b *testing.B) {
	b.Run("v3.1.1", func(b *testing.B) { benchDecode(b, pushPublish(), Version311) })
	b.Run("v5", func(b *testing.B) {
		p := pushPublish()
		p.Properties.MessageExpiry = new(uint32(3600))
		p.Properties.User = []UserProperty{{"msg_id", "01J9Z8X7Y6W5V4T3S2R1Q0P"}}
		benchDecode(b, p, Version5)
	})
	// Decoding into a packet the caller owns saves the allocation of the
	// packet; the topic string remains.
	b.Run("v3.1.1 into caller's", func(b *testing.B) {
		wire, _ := pushPublish().AppendTo(nil, Version311)
		b.ReportAllocs()
		b.SetBytes(int64(len(wire)))
		var p Publish
		for b.Loop() {
			fh, n, _ := ParseFixedHeader(wire, 4096)
			if err := p.Decode(Version311, fh, wire[n:], Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPubackAppend(b *testing.B) {
	b.Run("v3.1.1", func(b *testing.B) { benchAppend(b, &Puback{PacketID: 42}, Version311) })
	b.Run("v5", func(b *testing.B) { benchAppend(b, &Puback{PacketID: 42}, Version5) })
}

// BenchmarkPubackDecode is the gateway's per-message read: a device's
// acknowledgement, decoded into a value on the stack.
func BenchmarkPubackDecode(b *testing.B) {
	for _, v := range []byte{Version311, Version5} {
		wire, _ := (&Puback{PacketID: 42}).AppendTo(nil, v)
		b.Run(map[byte]string{Version311: "v3.1.1", Version5: "v5"}[v], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				fh, n, err := ParseFixedHeader(wire, 4096)
				if err != nil {
					b.Fatal(err)
				}
				var p Puback
				if err := p.Decode(v, fh, wire[n:], Limits{}); err != nil || p.PacketID != 42 {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPingrespAppend(b *testing.B) { benchAppend(b, &Pingresp{}, Version311) }

func BenchmarkConnectDecode(b *testing.B) {
	c := &Connect{CleanStart: true, KeepAlive: 300, ClientID: "0123456789abcdefghijkl",
		Username: "0123456789abcdefghijkl", Password: []byte("s3cr3t-device-secret-0123456789")}
	b.Run("v3.1.1", func(b *testing.B) { benchDecode(b, c, Version311) })
	b.Run("v5", func(b *testing.B) { benchDecode(b, c, Version5) })
}
