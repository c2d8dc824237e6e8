// Package packet encodes and decodes MQTT 3.1, 3.1.1 and 5.0 control packets.
//
// It is built for a server that faces the internet and keeps as little as it
// can per connection, so it holds no buffers and no state of its own:
//
//   - ParseFixedHeader reads the fixed header from whatever bytes have
//     arrived, says ErrNeedMore when that is not enough, and refuses an
//     oversized packet before the caller allocates its body.
//   - Decode (or a packet's own Decode method) parses exactly one body.
//     Byte-slice fields of the result (Publish.Payload, Connect.Password,
//     Will.Payload, Properties.CorrelationData and AuthenticationData) alias
//     the body: copy them before reusing the buffer. Strings are copies.
//   - AppendTo encodes a packet onto the caller's slice; with room in it,
//     PUBLISH, the acknowledgements and PINGRESP encode without allocating.
//
// Every failure is an *Error carrying the 5.0 ReasonCode the peer should be
// told (Malformed Packet, Protocol Error, Packet too large, ...); CodeOf
// extracts it. A 5.0 client gets it in a CONNACK or DISCONNECT. In 3.1.1 only
// a refused CONNECT has an answer, a CONNACK whose return code Connack
// derives from the same ReasonCode; any other failure closes the connection.
// Limits caps what a hostile packet can make the decoder allocate.
//
// The checks follow the MQTT 3.1.1 and 5.0 OASIS standards; section numbers
// in comments (§) are those of 5.0 unless said otherwise.
//
// Version 3 (MQTT 3.1, protocol name "MQIsdp") is accepted in CONNECT and is
// otherwise handled as 3.1.1; the two differ only in CONNECT.
package packet

import (
	"errors"
	"io"
)

// Protocol levels, as carried in CONNECT.
const (
	Version31  byte = 3 // MQTT 3.1 ("MQIsdp")
	Version311 byte = 4 // MQTT 3.1.1
	Version5   byte = 5 // MQTT 5.0
)

// Packet is one decoded or to-be-encoded control packet. Its concrete type
// is one of *Connect, *Connack, *Publish, *Puback, *Pubrec, *Pubrel,
// *Pubcomp, *Subscribe, *Suback, *Unsubscribe, *Unsuback, *Pingreq,
// *Pingresp, *Disconnect or *Auth.
type Packet interface {
	// Type returns the packet's control packet type.
	Type() Type
	// AppendTo appends the packet, fixed header included, as the given
	// protocol version encodes it, and returns the extended slice. Fields a
	// version cannot carry (properties and most reason codes before 5.0) are
	// left out. On error dst is returned unchanged in length.
	AppendTo(dst []byte, version byte) ([]byte, error)
	// Decode replaces the packet with the one in body, which holds exactly
	// fh.Remaining bytes following the fixed header fh.
	Decode(version byte, fh FixedHeader, body []byte, lim Limits) error
}

// Limits caps what one packet may make the decoder allocate, beyond the
// caller's maximum packet size. A zero field means its default.
type Limits struct {
	// MaxProperties caps the entries of one property block, user properties
	// and repeated subscription identifiers included. Default 64.
	MaxProperties int
	// MaxUserProperties caps the user properties of one block. Default 32.
	MaxUserProperties int
	// MaxTopicFilters caps the topic filters of one SUBSCRIBE or UNSUBSCRIBE.
	// Default 64.
	MaxTopicFilters int
}

// Default limits; see Limits.
const (
	DefaultMaxProperties     = 64
	DefaultMaxUserProperties = 32
	DefaultMaxTopicFilters   = 64
)

func (l *Limits) maxProperties() int { return orDefault(l.MaxProperties, DefaultMaxProperties) }
func (l *Limits) maxUserProperties() int {
	return orDefault(l.MaxUserProperties, DefaultMaxUserProperties)
}
func (l *Limits) maxTopicFilters() int { return orDefault(l.MaxTopicFilters, DefaultMaxTopicFilters) }

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Decode decodes one packet body with the default Limits. See Limits.Decode.
func Decode(version byte, fh FixedHeader, body []byte) (Packet, error) {
	return Limits{}.Decode(version, fh, body)
}

// Decode decodes the body of the packet whose fixed header is fh, for a
// connection speaking version (ignored for CONNECT, which names its own).
// body must hold exactly fh.Remaining bytes; byte-slice fields of the result
// alias it. On failure it returns nil and an *Error; to learn the version a
// refused CONNECT asked for, use (*Connect).Decode instead.
func (l Limits) Decode(version byte, fh FixedHeader, body []byte) (Packet, error) {
	p := newPacket(fh.Type)
	if p == nil {
		return nil, errReservedType
	}
	if err := p.Decode(version, fh, body, l); err != nil {
		return nil, err
	}
	return p, nil
}

// newPacket returns an empty packet of type t, or nil for a reserved type.
func newPacket(t Type) Packet {
	switch t {
	case TypeConnect:
		return new(Connect)
	case TypeConnack:
		return new(Connack)
	case TypePublish:
		return new(Publish)
	case TypePuback:
		return new(Puback)
	case TypePubrec:
		return new(Pubrec)
	case TypePubrel:
		return new(Pubrel)
	case TypePubcomp:
		return new(Pubcomp)
	case TypeSubscribe:
		return new(Subscribe)
	case TypeSuback:
		return new(Suback)
	case TypeUnsubscribe:
		return new(Unsubscribe)
	case TypeUnsuback:
		return new(Unsuback)
	case TypePingreq:
		return new(Pingreq)
	case TypePingresp:
		return new(Pingresp)
	case TypeDisconnect:
		return new(Disconnect)
	case TypeAuth:
		return new(Auth)
	}
	return nil
}

// begin checks what every Decode method needs before reading a body: that
// fh is for packet type t and well-formed, that body is as long as it says,
// and that the version is one this package speaks. AUTH exists only in 5.0.
func begin(version byte, fh FixedHeader, body []byte, t Type) error {
	if fh.Type != t {
		return errWrongType
	}
	if err := checkFlags(fh.Type, fh.Flags); err != nil {
		return err
	}
	if len(body) != fh.Remaining {
		return errBodyLength
	}
	if t != TypeConnect {
		if err := checkVersion(version); err != nil {
			return err
		}
		if t == TypeAuth && version < Version5 {
			return errAuthV3
		}
	}
	return nil
}

func checkVersion(version byte) error {
	if version < Version31 || version > Version5 {
		return errVersion
	}
	return nil
}

// checkRemaining is the last check of every encoder: a body longer than
// MaxRemaining cannot be framed.
func checkRemaining(n int) error {
	if n > MaxRemaining {
		return errEncodeTooLarge
	}
	return nil
}

// ReadPacket reads one packet from r, for clients and tests; the gateway's
// event loop uses ParseFixedHeader and Decode on its own buffers instead.
// It refuses a packet larger than maxSize (if > 0) before allocating its
// body. A stream that ends inside a packet yields io.ErrUnexpectedEOF.
func ReadPacket(r io.Reader, version byte, maxSize int) (Packet, error) {
	var hdr [5]byte
	for n := 1; ; n++ {
		if _, err := io.ReadFull(r, hdr[n-1:n]); err != nil {
			if n > 1 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		fh, _, err := ParseFixedHeader(hdr[:n], maxSize)
		if errors.Is(err, ErrNeedMore) {
			continue // parseVarint fails by the fifth byte, so n stays <= 5
		}
		if err != nil {
			return nil, err
		}
		body := make([]byte, fh.Remaining)
		if _, err := io.ReadFull(r, body); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return Decode(version, fh, body)
	}
}

// WritePacket encodes p for version and writes it to w in one call.
func WritePacket(w io.Writer, p Packet, version byte) error {
	b, err := p.AppendTo(nil, version)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Interface guards.
var (
	_ Packet = (*Connect)(nil)
	_ Packet = (*Connack)(nil)
	_ Packet = (*Publish)(nil)
	_ Packet = (*Puback)(nil)
	_ Packet = (*Pubrec)(nil)
	_ Packet = (*Pubrel)(nil)
	_ Packet = (*Pubcomp)(nil)
	_ Packet = (*Subscribe)(nil)
	_ Packet = (*Suback)(nil)
	_ Packet = (*Unsubscribe)(nil)
	_ Packet = (*Unsuback)(nil)
	_ Packet = (*Pingreq)(nil)
	_ Packet = (*Pingresp)(nil)
	_ Packet = (*Disconnect)(nil)
	_ Packet = (*Auth)(nil)
)
