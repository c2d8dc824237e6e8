package packet

// Publish is a PUBLISH packet (spec §3.3): an application message.
type Publish struct {
	// Topic is the topic name. In 5.0 it may be empty when
	// Properties.TopicAlias stands for it.
	Topic string
	// Payload is the application message. After Decode it aliases the body.
	Payload []byte
	// PacketID identifies a QoS 1 or 2 message; it is 0 at QoS 0.
	PacketID uint16
	// QoS is 0, 1 or 2.
	QoS byte
	// Retain asks the server to keep the message for future subscribers.
	Retain bool
	// Dup marks a redelivery; it is never set at QoS 0.
	Dup bool
	// Properties are 5.0 only.
	Properties Properties
}

// Type returns TypePublish.
func (*Publish) Type() Type { return TypePublish }

// Decode implements Packet. The flags come from fh: QoS 3 is malformed and
// DUP at QoS 0 a protocol error, as is a zero packet identifier. A topic name
// with a wildcard fails with ReasonTopicNameInvalid.
func (p *Publish) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(version, fh, body, TypePublish); err != nil {
		return err
	}
	*p = Publish{
		Dup:    fh.Flags&0x08 != 0,
		QoS:    fh.Flags >> 1 & 0x03,
		Retain: fh.Flags&0x01 != 0,
	}
	if p.Dup && p.QoS == 0 {
		return errDupQoS0
	}
	r := reader{body}
	var err error
	if p.Topic, err = r.str(); err != nil {
		return err
	}
	if p.QoS > 0 {
		if p.PacketID, err = r.u16(); err != nil {
			return err
		}
		if p.PacketID == 0 {
			return errPacketIDZero
		}
	}
	if version >= Version5 {
		if err := p.Properties.decode(&r, scopeOf(TypePublish), &lim); err != nil {
			return err
		}
	}
	if err := p.checkTopic(version); err != nil {
		return err
	}
	// Capped so that appending to the payload cannot overwrite whatever
	// follows the body in the caller's buffer.
	p.Payload = r.b[:len(r.b):len(r.b)]
	return nil
}

// checkTopic applies the topic name rules to a topic already known to be a
// valid string: no wildcards, and not empty unless, in 5.0, a topic alias
// stands for it (§3.3.2.3.4).
func (p *Publish) checkTopic(version byte) error {
	if p.Topic == "" {
		if version >= Version5 && p.Properties.TopicAlias != 0 {
			return nil
		}
		return errNoTopic
	}
	if hasWildcard(p.Topic) {
		return errTopicName
	}
	return nil
}

// AppendTo implements Packet. It allocates nothing when dst has room, which
// is what the gateway's per-message write path relies on.
func (p *Publish) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	switch {
	case p.QoS > 2:
		return dst, errQoS3
	case p.QoS > 0 && p.PacketID == 0:
		return dst, errPacketIDZero
	case p.QoS == 0 && p.Dup:
		return dst, errDupQoS0
	}
	if err := checkString(p.Topic); err != nil {
		return dst, err
	}
	if err := p.checkTopic(version); err != nil {
		return dst, err
	}
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	var pn int
	if version >= Version5 {
		var err error
		if pn, err = p.Properties.size(scopeOf(TypePublish)); err != nil {
			return dst, err
		}
		n += varintLen(pn) + pn
	}
	if err := checkRemaining(n); err != nil {
		return dst, err
	}
	flags := p.QoS << 1
	if p.Dup {
		flags |= 0x08
	}
	if p.Retain {
		flags |= 0x01
	}
	dst = appendHeader(dst, TypePublish, flags, n)
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if version >= Version5 {
		dst = p.Properties.appendTo(dst, pn)
	}
	return append(dst, p.Payload...), nil
}

// Puback is a PUBACK packet (spec §3.4), the answer to a QoS 1 PUBLISH and,
// for Herald, a device's acknowledgement of a push. ReasonCode and
// Properties are 5.0 only.
type Puback struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Pubrec is a PUBREC packet (spec §3.5), the first answer to a QoS 2
// PUBLISH. It has the same fields as Puback.
type Pubrec Puback

// Pubrel is a PUBREL packet (spec §3.6), the answer to a PUBREC. It has the
// same fields as Puback.
type Pubrel Puback

// Pubcomp is a PUBCOMP packet (spec §3.7), the answer to a PUBREL. It has
// the same fields as Puback.
type Pubcomp Puback

// Type returns TypePuback.
func (*Puback) Type() Type { return TypePuback }

// Type returns TypePubrec.
func (*Pubrec) Type() Type { return TypePubrec }

// Type returns TypePubrel.
func (*Pubrel) Type() Type { return TypePubrel }

// Type returns TypePubcomp.
func (*Pubcomp) Type() Type { return TypePubcomp }

// AppendTo implements Packet without allocating when dst has room.
func (p *Puback) AppendTo(dst []byte, version byte) ([]byte, error) {
	return p.appendAck(dst, version, TypePuback)
}

// AppendTo implements Packet.
func (p *Pubrec) AppendTo(dst []byte, version byte) ([]byte, error) {
	return (*Puback)(p).appendAck(dst, version, TypePubrec)
}

// AppendTo implements Packet.
func (p *Pubrel) AppendTo(dst []byte, version byte) ([]byte, error) {
	return (*Puback)(p).appendAck(dst, version, TypePubrel)
}

// AppendTo implements Packet.
func (p *Pubcomp) AppendTo(dst []byte, version byte) ([]byte, error) {
	return (*Puback)(p).appendAck(dst, version, TypePubcomp)
}

// Decode implements Packet. Decoding into a Puback on the caller's stack
// allocates nothing unless the packet carries string properties.
func (p *Puback) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	return p.decodeAck(version, fh, body, &lim, TypePuback)
}

// Decode implements Packet.
func (p *Pubrec) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	return (*Puback)(p).decodeAck(version, fh, body, &lim, TypePubrec)
}

// Decode implements Packet.
func (p *Pubrel) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	return (*Puback)(p).decodeAck(version, fh, body, &lim, TypePubrel)
}

// Decode implements Packet.
func (p *Pubcomp) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	return (*Puback)(p).decodeAck(version, fh, body, &lim, TypePubcomp)
}

// ackFlags returns the fixed-header flags of t: PUBREL alone has 0b0010.
func ackFlags(t Type) byte {
	if t == TypePubrel {
		return 0x02
	}
	return 0
}

// appendAck encodes the four publish acknowledgements, which differ only in
// type, flags and allowed reason codes. In 5.0 it uses the short forms of
// §3.4.2.1: no reason code when it is Success without properties, and no
// property length when there are no properties.
func (p *Puback) appendAck(dst []byte, version byte, t Type) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if p.PacketID == 0 {
		return dst, errPacketIDZero
	}
	n, pn := 2, 0
	if version >= Version5 {
		if !p.ReasonCode.validFor(t) {
			return dst, errReasonCode
		}
		var err error
		if pn, err = p.Properties.size(scopeOf(t)); err != nil {
			return dst, err
		}
		switch {
		case pn > 0:
			n += 1 + varintLen(pn) + pn
		case p.ReasonCode != ReasonSuccess:
			n++
		}
		if err := checkRemaining(n); err != nil {
			return dst, err
		}
	}
	dst = appendU16(appendHeader(dst, t, ackFlags(t), n), p.PacketID)
	if n > 2 {
		dst = append(dst, byte(p.ReasonCode))
	}
	if n > 3 {
		dst = p.Properties.appendTo(dst, pn)
	}
	return dst, nil
}

func (p *Puback) decodeAck(version byte, fh FixedHeader, body []byte, lim *Limits, t Type) error {
	if err := begin(version, fh, body, t); err != nil {
		return err
	}
	*p = Puback{}
	r := reader{body}
	var err error
	if p.PacketID, err = r.u16(); err != nil {
		return err
	}
	if p.PacketID == 0 {
		return errPacketIDZero
	}
	if version < Version5 || len(r.b) == 0 {
		return r.end()
	}
	c, _ := r.u8()
	p.ReasonCode = ReasonCode(c)
	if !p.ReasonCode.validFor(t) {
		return errReasonCode
	}
	if len(r.b) == 0 {
		return nil
	}
	if err := p.Properties.decode(&r, scopeOf(t), lim); err != nil {
		return err
	}
	return r.end()
}

// end reports bytes left over after the last field as malformed.
func (r *reader) end() error {
	if len(r.b) != 0 {
		return errTrailing
	}
	return nil
}
