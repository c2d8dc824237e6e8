package packet

// Subscription is one topic filter of a SUBSCRIBE with its options
// (spec §3.8.3.1). NoLocal, RetainAsPublished and RetainHandling are 5.0
// only.
type Subscription struct {
	Filter            string
	QoS               byte // maximum QoS: 0, 1 or 2
	NoLocal           bool // do not send the subscriber its own messages
	RetainAsPublished bool // keep the RETAIN flag when forwarding
	RetainHandling    byte // 0: send retained, 1: only if new, 2: never
}

// Subscribe is a SUBSCRIBE packet (spec §3.8).
type Subscribe struct {
	PacketID      uint16
	Subscriptions []Subscription // at least one
	// Properties are 5.0 only: at most one subscription identifier and
	// user properties.
	Properties Properties
}

// Type returns TypeSubscribe.
func (*Subscribe) Type() Type { return TypeSubscribe }

// Decode implements Packet. Reserved option bits and QoS 3 are malformed;
// retain handling 3, no topic filters and no local on a shared subscription
// are protocol errors; a badly placed wildcard fails with
// ReasonTopicFilterInvalid for the whole packet.
func (s *Subscribe) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(version, fh, body, TypeSubscribe); err != nil {
		return err
	}
	*s = Subscribe{}
	r := reader{body}
	var err error
	if s.PacketID, err = r.packetID(); err != nil {
		return err
	}
	if version >= Version5 {
		if err := s.Properties.decode(&r, scopeOf(TypeSubscribe), &lim); err != nil {
			return err
		}
	}
	if len(r.b) == 0 {
		return errNoSubscriptions
	}
	for len(r.b) > 0 {
		if len(s.Subscriptions) == lim.maxTopicFilters() {
			return errTooManyFilters
		}
		var sub Subscription
		if sub.Filter, err = r.str(); err != nil {
			return err
		}
		opts, err := r.u8()
		if err != nil {
			return err
		}
		if err := sub.setOptions(opts, version); err != nil {
			return err
		}
		s.Subscriptions = append(s.Subscriptions, sub)
	}
	for i := range s.Subscriptions {
		if err := s.Subscriptions[i].check(version); err != nil {
			return err
		}
	}
	return nil
}

// setOptions decodes a subscription options byte.
func (s *Subscription) setOptions(opts, version byte) error {
	reserved := byte(0xfc) // 3.1.1: everything above the QoS
	if version >= Version5 {
		reserved = 0xc0
	}
	if opts&reserved != 0 {
		return errSubOptions
	}
	s.QoS = opts & 0x03
	s.NoLocal = opts&0x04 != 0
	s.RetainAsPublished = opts&0x08 != 0
	s.RetainHandling = opts >> 4 & 0x03
	if s.QoS == 3 {
		return errQoS3
	}
	if s.RetainHandling == 3 {
		return errRetainHandling
	}
	return nil
}

// options encodes the options byte; 3.1.1 carries only the QoS.
func (s *Subscription) options(version byte) byte {
	b := s.QoS
	if version >= Version5 {
		if s.NoLocal {
			b |= 0x04
		}
		if s.RetainAsPublished {
			b |= 0x08
		}
		b |= s.RetainHandling << 4
	}
	return b
}

// check applies the rules on a well-formed subscription.
func (s *Subscription) check(version byte) error {
	if err := CheckTopicFilter(s.Filter, version); err != nil {
		return err
	}
	if s.NoLocal && isShared(s.Filter, version) {
		return errSharedNoLocal // §3.8.3.1
	}
	return nil
}

// AppendTo implements Packet.
func (s *Subscribe) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if s.PacketID == 0 {
		return dst, errPacketIDZero
	}
	if len(s.Subscriptions) == 0 {
		return dst, errNoSubscriptions
	}
	n := 2
	for i := range s.Subscriptions {
		sub := &s.Subscriptions[i]
		if sub.QoS > 2 {
			return dst, errQoS3
		}
		if sub.RetainHandling > 2 {
			return dst, errRetainHandling
		}
		if err := sub.check(version); err != nil {
			return dst, err
		}
		n += 2 + len(sub.Filter) + 1
	}
	var pn int
	if version >= Version5 {
		var err error
		if pn, err = s.Properties.size(scopeOf(TypeSubscribe)); err != nil {
			return dst, err
		}
		n += varintLen(pn) + pn
	}
	if err := checkRemaining(n); err != nil {
		return dst, err
	}
	dst = appendU16(appendHeader(dst, TypeSubscribe, 0x02, n), s.PacketID)
	if version >= Version5 {
		dst = s.Properties.appendTo(dst, pn)
	}
	for i := range s.Subscriptions {
		sub := &s.Subscriptions[i]
		dst = append(appendString(dst, sub.Filter), sub.options(version))
	}
	return dst, nil
}

// Suback is a SUBACK packet (spec §3.9): one reason code per topic filter,
// in order. In 3.1.1 the codes are Granted QoS 0 to 2 and any failure is
// sent as 0x80.
type Suback struct {
	PacketID    uint16
	ReasonCodes []ReasonCode
	// Properties are 5.0 only.
	Properties Properties
}

// Type returns TypeSuback.
func (*Suback) Type() Type { return TypeSuback }

// Decode implements Packet.
func (s *Suback) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(version, fh, body, TypeSuback); err != nil {
		return err
	}
	*s = Suback{}
	r := reader{body}
	var err error
	if s.PacketID, err = r.packetID(); err != nil {
		return err
	}
	if version >= Version5 {
		if err := s.Properties.decode(&r, scopeOf(TypeSuback), &lim); err != nil {
			return err
		}
	}
	s.ReasonCodes, err = r.reasonCodes(version, TypeSuback, &lim)
	return err
}

// AppendTo implements Packet.
func (s *Suback) AppendTo(dst []byte, version byte) ([]byte, error) {
	return appendCodes(dst, version, TypeSuback, s.PacketID, s.ReasonCodes, &s.Properties)
}

// Unsubscribe is an UNSUBSCRIBE packet (spec §3.10).
type Unsubscribe struct {
	PacketID uint16
	Filters  []string // at least one
	// Properties are 5.0 only: user properties.
	Properties Properties
}

// Type returns TypeUnsubscribe.
func (*Unsubscribe) Type() Type { return TypeUnsubscribe }

// Decode implements Packet, with the topic filter rules of Subscribe.
func (u *Unsubscribe) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(version, fh, body, TypeUnsubscribe); err != nil {
		return err
	}
	*u = Unsubscribe{}
	r := reader{body}
	var err error
	if u.PacketID, err = r.packetID(); err != nil {
		return err
	}
	if version >= Version5 {
		if err := u.Properties.decode(&r, scopeOf(TypeUnsubscribe), &lim); err != nil {
			return err
		}
	}
	if len(r.b) == 0 {
		return errNoSubscriptions
	}
	for len(r.b) > 0 {
		if len(u.Filters) == lim.maxTopicFilters() {
			return errTooManyFilters
		}
		f, err := r.str()
		if err != nil {
			return err
		}
		u.Filters = append(u.Filters, f)
	}
	for _, f := range u.Filters {
		if err := CheckTopicFilter(f, version); err != nil {
			return err
		}
	}
	return nil
}

// AppendTo implements Packet.
func (u *Unsubscribe) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if u.PacketID == 0 {
		return dst, errPacketIDZero
	}
	if len(u.Filters) == 0 {
		return dst, errNoSubscriptions
	}
	n := 2
	for _, f := range u.Filters {
		if err := CheckTopicFilter(f, version); err != nil {
			return dst, err
		}
		n += 2 + len(f)
	}
	var pn int
	if version >= Version5 {
		var err error
		if pn, err = u.Properties.size(scopeOf(TypeUnsubscribe)); err != nil {
			return dst, err
		}
		n += varintLen(pn) + pn
	}
	if err := checkRemaining(n); err != nil {
		return dst, err
	}
	dst = appendU16(appendHeader(dst, TypeUnsubscribe, 0x02, n), u.PacketID)
	if version >= Version5 {
		dst = u.Properties.appendTo(dst, pn)
	}
	for _, f := range u.Filters {
		dst = appendString(dst, f)
	}
	return dst, nil
}

// Unsuback is an UNSUBACK packet (spec §3.11). ReasonCodes (one per topic
// filter) and Properties are 5.0 only; 3.1.1 sends the packet identifier
// alone.
type Unsuback struct {
	PacketID    uint16
	ReasonCodes []ReasonCode
	Properties  Properties
}

// Type returns TypeUnsuback.
func (*Unsuback) Type() Type { return TypeUnsuback }

// Decode implements Packet.
func (u *Unsuback) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(version, fh, body, TypeUnsuback); err != nil {
		return err
	}
	*u = Unsuback{}
	r := reader{body}
	var err error
	if u.PacketID, err = r.packetID(); err != nil {
		return err
	}
	if version < Version5 {
		return r.end()
	}
	if err := u.Properties.decode(&r, scopeOf(TypeUnsuback), &lim); err != nil {
		return err
	}
	u.ReasonCodes, err = r.reasonCodes(version, TypeUnsuback, &lim)
	return err
}

// AppendTo implements Packet.
func (u *Unsuback) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if version < Version5 {
		if u.PacketID == 0 {
			return dst, errPacketIDZero
		}
		return appendU16(appendHeader(dst, TypeUnsuback, 0, 2), u.PacketID), nil
	}
	return appendCodes(dst, version, TypeUnsuback, u.PacketID, u.ReasonCodes, &u.Properties)
}

// packetID reads a packet identifier, which must not be 0 (§2.2.1).
func (r *reader) packetID() (uint16, error) {
	id, err := r.u16()
	if err == nil && id == 0 {
		err = errPacketIDZero
	}
	return id, err
}

// reasonCodes reads the rest of a SUBACK or 5.0 UNSUBACK: at least one
// reason code, each allowed in packet type t, and no more than there may
// be topic filters. 3.1.1 SUBACK return codes are 0, 1, 2 and 0x80, which
// are also their 5.0 values.
func (r *reader) reasonCodes(version byte, t Type, lim *Limits) ([]ReasonCode, error) {
	if len(r.b) == 0 {
		return nil, errNoSubscriptions
	}
	if len(r.b) > lim.maxTopicFilters() {
		return nil, errTooManyFilters
	}
	codes := make([]ReasonCode, len(r.b))
	for i, b := range r.b {
		c := ReasonCode(b)
		if version < Version5 {
			if c > ReasonGrantedQoS2 && c != ReasonUnspecifiedError {
				return nil, errReasonCode
			}
		} else if !c.validFor(t) {
			return nil, errReasonCode
		}
		codes[i] = c
	}
	r.b = nil
	return codes, nil
}

// appendCodes encodes a SUBACK or a 5.0 UNSUBACK.
func appendCodes(dst []byte, version byte, t Type, id uint16, codes []ReasonCode, props *Properties) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if id == 0 {
		return dst, errPacketIDZero
	}
	if len(codes) == 0 {
		return dst, errNoSubscriptions
	}
	for _, c := range codes {
		if version >= Version5 && !c.validFor(t) ||
			version < Version5 && c > ReasonGrantedQoS2 && !c.IsError() {
			return dst, errReasonCode
		}
	}
	n := 2 + len(codes)
	var pn int
	if version >= Version5 {
		var err error
		if pn, err = props.size(scopeOf(t)); err != nil {
			return dst, err
		}
		n += varintLen(pn) + pn
	}
	if err := checkRemaining(n); err != nil {
		return dst, err
	}
	dst = appendU16(appendHeader(dst, t, 0, n), id)
	if version >= Version5 {
		dst = props.appendTo(dst, pn)
	}
	for _, c := range codes {
		if version < Version5 && c.IsError() {
			c = ReasonUnspecifiedError
		}
		dst = append(dst, byte(c))
	}
	return dst, nil
}
