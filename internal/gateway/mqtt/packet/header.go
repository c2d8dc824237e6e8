package packet

// Type is an MQTT control packet type, the high nibble of the first byte.
type Type byte

// Control packet types (spec §2.1.2). 0 is reserved in both versions and 15
// is AUTH in 5.0 and reserved in 3.1.1.
const (
	TypeConnect     Type = 1
	TypeConnack     Type = 2
	TypePublish     Type = 3
	TypePuback      Type = 4
	TypePubrec      Type = 5
	TypePubrel      Type = 6
	TypePubcomp     Type = 7
	TypeSubscribe   Type = 8
	TypeSuback      Type = 9
	TypeUnsubscribe Type = 10
	TypeUnsuback    Type = 11
	TypePingreq     Type = 12
	TypePingresp    Type = 13
	TypeDisconnect  Type = 14
	TypeAuth        Type = 15
)

// String returns the packet type's name as the specification spells it.
func (t Type) String() string {
	switch t {
	case TypeConnect:
		return "CONNECT"
	case TypeConnack:
		return "CONNACK"
	case TypePublish:
		return "PUBLISH"
	case TypePuback:
		return "PUBACK"
	case TypePubrec:
		return "PUBREC"
	case TypePubrel:
		return "PUBREL"
	case TypePubcomp:
		return "PUBCOMP"
	case TypeSubscribe:
		return "SUBSCRIBE"
	case TypeSuback:
		return "SUBACK"
	case TypeUnsubscribe:
		return "UNSUBSCRIBE"
	case TypeUnsuback:
		return "UNSUBACK"
	case TypePingreq:
		return "PINGREQ"
	case TypePingresp:
		return "PINGRESP"
	case TypeDisconnect:
		return "DISCONNECT"
	case TypeAuth:
		return "AUTH"
	}
	return "RESERVED"
}

// MaxRemaining is the largest remaining length a 4-byte variable byte
// integer can express (spec §1.5.5), so no packet body is longer.
const MaxRemaining = 268_435_455

// MaxPacketSize is the largest whole packet: a 5-byte fixed header and
// MaxRemaining bytes.
const MaxPacketSize = 1 + 4 + MaxRemaining

// FixedHeader is the part of a packet in front of its body (spec §2.1).
type FixedHeader struct {
	Type      Type
	Flags     byte // the low nibble of the first byte
	Remaining int  // length of the body that follows the header
}

// ParseFixedHeader parses the fixed header at the start of b, which may hold
// only part of a packet. It returns the header and its length n; the whole
// packet is then b[:n+fh.Remaining], once that many bytes have arrived.
//
// If b ends inside the header it returns ErrNeedMore, so an event-driven
// reader can wait for more bytes without keeping any state but b. Checks
// that need only the header are done here, before the caller allocates a
// body: the packet type, the reserved flag bits, QoS 3, the shortest-form
// 4-byte remaining length, and (when maxSize > 0) the whole packet's size
// against maxSize, which yields ErrPacketTooLarge.
func ParseFixedHeader(b []byte, maxSize int) (fh FixedHeader, n int, err error) {
	if len(b) == 0 {
		return FixedHeader{}, 0, ErrNeedMore
	}
	fh.Type, fh.Flags = Type(b[0]>>4), b[0]&0x0f
	if err := checkFlags(fh.Type, fh.Flags); err != nil {
		return FixedHeader{}, 0, err
	}
	v, vn, err := parseVarint(b[1:])
	if err != nil {
		return FixedHeader{}, 0, err
	}
	if maxSize > 0 && 1+vn+v > maxSize {
		return FixedHeader{}, 0, ErrPacketTooLarge
	}
	if (fh.Type == TypePingreq || fh.Type == TypePingresp) && v != 0 {
		return FixedHeader{}, 0, errTrailing
	}
	fh.Remaining = v
	return fh, 1 + vn, nil
}

// checkFlags checks the fixed-header flags of t (spec §2.1.3): PUBLISH
// carries DUP, QoS and RETAIN, PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry
// 0b0010, and every other type 0. A wrong value is a malformed packet.
func checkFlags(t Type, flags byte) error {
	switch t {
	case 0:
		return errReservedType
	case TypePublish:
		if flags&0x06 == 0x06 {
			return errQoS3
		}
		return nil
	case TypePubrel, TypeSubscribe, TypeUnsubscribe:
		if flags != 0x02 {
			return errFlags
		}
		return nil
	}
	if flags != 0 {
		return errFlags
	}
	return nil
}

// appendHeader appends a fixed header for a body of length remaining.
func appendHeader(dst []byte, t Type, flags byte, remaining int) []byte {
	return appendVarint(append(dst, byte(t)<<4|flags), remaining)
}

// parseVarint decodes a variable byte integer (spec §1.5.5) from the start
// of b. It returns ErrNeedMore if b ends first; a fifth byte or a padded
// encoding (a last byte of 0 after the first) is malformed, as the
// specification requires the shortest form.
func parseVarint(b []byte) (v, n int, err error) {
	shift := 0
	for i := range 4 {
		if i >= len(b) {
			return 0, 0, ErrNeedMore
		}
		c := b[i]
		v |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, 0, errVarintPadded
			}
			return v, i + 1, nil
		}
		shift += 7
	}
	return 0, 0, errVarintLong
}

// appendVarint appends v, which must be in [0, MaxRemaining], as a variable
// byte integer.
func appendVarint(dst []byte, v int) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// varintLen returns the encoded length of v.
func varintLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	}
	return 4
}
