package packet

// PropertyID identifies an MQTT 5.0 property (spec §2.2.2.2). The identifier
// is a variable byte integer on the wire, but every one defined fits a byte.
type PropertyID byte

// Property identifiers.
const (
	PropPayloadFormat           PropertyID = 0x01 // byte
	PropMessageExpiry           PropertyID = 0x02 // four-byte integer
	PropContentType             PropertyID = 0x03 // string
	PropResponseTopic           PropertyID = 0x08 // string
	PropCorrelationData         PropertyID = 0x09 // binary
	PropSubscriptionID          PropertyID = 0x0B // variable byte integer
	PropSessionExpiry           PropertyID = 0x11 // four-byte integer
	PropAssignedClientID        PropertyID = 0x12 // string
	PropServerKeepAlive         PropertyID = 0x13 // two-byte integer
	PropAuthenticationMethod    PropertyID = 0x15 // string
	PropAuthenticationData      PropertyID = 0x16 // binary
	PropRequestProblemInfo      PropertyID = 0x17 // byte
	PropWillDelay               PropertyID = 0x18 // four-byte integer
	PropRequestResponseInfo     PropertyID = 0x19 // byte
	PropResponseInfo            PropertyID = 0x1A // string
	PropServerReference         PropertyID = 0x1C // string
	PropReasonString            PropertyID = 0x1F // string
	PropReceiveMaximum          PropertyID = 0x21 // two-byte integer
	PropTopicAliasMaximum       PropertyID = 0x22 // two-byte integer
	PropTopicAlias              PropertyID = 0x23 // two-byte integer
	PropMaximumQoS              PropertyID = 0x24 // byte
	PropRetainAvailable         PropertyID = 0x25 // byte
	PropUser                    PropertyID = 0x26 // string pair
	PropMaximumPacketSize       PropertyID = 0x27 // four-byte integer
	PropWildcardSubAvailable    PropertyID = 0x28 // byte
	PropSubscriptionIDAvailable PropertyID = 0x29 // byte
	PropSharedSubAvailable      PropertyID = 0x2A // byte
)

// String returns the property's name as the specification spells it.
func (id PropertyID) String() string {
	switch id {
	case PropPayloadFormat:
		return "Payload Format Indicator"
	case PropMessageExpiry:
		return "Message Expiry Interval"
	case PropContentType:
		return "Content Type"
	case PropResponseTopic:
		return "Response Topic"
	case PropCorrelationData:
		return "Correlation Data"
	case PropSubscriptionID:
		return "Subscription Identifier"
	case PropSessionExpiry:
		return "Session Expiry Interval"
	case PropAssignedClientID:
		return "Assigned Client Identifier"
	case PropServerKeepAlive:
		return "Server Keep Alive"
	case PropAuthenticationMethod:
		return "Authentication Method"
	case PropAuthenticationData:
		return "Authentication Data"
	case PropRequestProblemInfo:
		return "Request Problem Information"
	case PropWillDelay:
		return "Will Delay Interval"
	case PropRequestResponseInfo:
		return "Request Response Information"
	case PropResponseInfo:
		return "Response Information"
	case PropServerReference:
		return "Server Reference"
	case PropReasonString:
		return "Reason String"
	case PropReceiveMaximum:
		return "Receive Maximum"
	case PropTopicAliasMaximum:
		return "Topic Alias Maximum"
	case PropTopicAlias:
		return "Topic Alias"
	case PropMaximumQoS:
		return "Maximum QoS"
	case PropRetainAvailable:
		return "Retain Available"
	case PropUser:
		return "User Property"
	case PropMaximumPacketSize:
		return "Maximum Packet Size"
	case PropWildcardSubAvailable:
		return "Wildcard Subscription Available"
	case PropSubscriptionIDAvailable:
		return "Subscription Identifier Available"
	case PropSharedSubAvailable:
		return "Shared Subscription Available"
	}
	return "Reserved Property"
}

// scope is a set of places a property block can be: one bit per packet type
// and bit 0, which no packet type uses, for a CONNECT's will properties.
type scope uint16

const scopeWill scope = 1

func scopeOf(t Type) scope { return 1 << t }

// scopeAcks are the packets whose only properties are a reason string and
// user properties.
const scopeAcks = 1<<TypePuback | 1<<TypePubrec | 1<<TypePubrel | 1<<TypePubcomp |
	1<<TypeSuback | 1<<TypeUnsuback

// propScope returns where property id may appear (spec §2.2.2.2), or 0 for
// an identifier the specification does not define.
func propScope(id PropertyID) scope {
	const (
		connect    = 1 << TypeConnect
		connack    = 1 << TypeConnack
		publish    = 1 << TypePublish
		subscribe  = 1 << TypeSubscribe
		disconnect = 1 << TypeDisconnect
		auth       = 1 << TypeAuth
	)
	switch id {
	case PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic, PropCorrelationData:
		return publish | scopeWill
	case PropSubscriptionID:
		return publish | subscribe
	case PropSessionExpiry:
		return connect | connack | disconnect
	case PropAssignedClientID, PropServerKeepAlive, PropResponseInfo, PropMaximumQoS,
		PropRetainAvailable, PropWildcardSubAvailable, PropSubscriptionIDAvailable, PropSharedSubAvailable:
		return connack
	case PropAuthenticationMethod, PropAuthenticationData:
		return connect | connack | auth
	case PropRequestProblemInfo, PropRequestResponseInfo:
		return connect
	case PropWillDelay:
		return scopeWill
	case PropServerReference:
		return connack | disconnect
	case PropReasonString:
		return connack | scopeAcks | disconnect | auth
	case PropReceiveMaximum, PropTopicAliasMaximum, PropMaximumPacketSize:
		return connect | connack
	case PropTopicAlias:
		return publish
	case PropUser:
		return connect | connack | publish | scopeWill | scopeAcks | subscribe |
			1<<TypeUnsubscribe | disconnect | auth
	}
	return 0
}

// UserProperty is one User Property, a name-value pair whose meaning is up
// to the application. Names may repeat; order is kept.
type UserProperty struct {
	Key, Value string
}

// Properties holds the properties of one 5.0 property block. Which fields a
// packet may carry is fixed by the specification (see PropertyID); decoding
// refuses any other, and encoding fails on any other that is set.
//
// A zero value means "absent" wherever the specification gives zero no
// meaning of its own or forbids it. Where a present zero differs from absence
// the field is a pointer, nil when absent; Go 1.26's new(v) sets one in
// place. An empty string is treated as absent. Byte slices are absent when
// nil and, after decoding, alias the packet body.
type Properties struct {
	PayloadFormat        byte           // 0 (bytes) or 1 (UTF-8); PUBLISH, will
	MessageExpiry        *uint32        // seconds; nil: never expires; PUBLISH, will
	ContentType          string         // PUBLISH, will
	ResponseTopic        string         // a topic name; PUBLISH, will
	CorrelationData      []byte         // PUBLISH, will
	SubscriptionIDs      []uint32       // 1 to MaxRemaining; several in PUBLISH, at most one in SUBSCRIBE
	SessionExpiry        *uint32        // seconds; CONNECT, CONNACK, DISCONNECT
	AssignedClientID     string         // CONNACK
	ServerKeepAlive      *uint16        // seconds; CONNACK
	AuthenticationMethod string         // CONNECT, CONNACK, AUTH
	AuthenticationData   []byte         // needs AuthenticationMethod; CONNECT, CONNACK, AUTH
	RequestProblemInfo   *bool          // nil means true; CONNECT
	WillDelay            uint32         // seconds; will
	RequestResponseInfo  bool           // CONNECT
	ResponseInfo         string         // CONNACK
	ServerReference      string         // CONNACK, DISCONNECT
	ReasonString         string         // acknowledgements, DISCONNECT, AUTH
	ReceiveMaximum       uint16         // 0: absent, meaning 65535; CONNECT, CONNACK
	TopicAliasMaximum    uint16         // CONNECT, CONNACK
	TopicAlias           uint16         // PUBLISH
	MaximumQoS           *byte          // 0 or 1; nil means 2; CONNACK
	RetainAvailable      *bool          // nil means true; CONNACK
	User                 []UserProperty // every packet with properties
	MaximumPacketSize    uint32         // 0: absent, meaning no limit; CONNECT, CONNACK
	WildcardSubAvailable *bool          // nil means true; CONNACK
	SubIDAvailable       *bool          // nil means true; CONNACK
	SharedSubAvailable   *bool          // nil means true; CONNACK
}

// decode reads a property block (its length, then the properties) for
// scope sc into p, which must be zero. It enforces the identifier table,
// each property's type and range, the rule that only User Property and,
// in PUBLISH, Subscription Identifier may repeat, and lim.
func (p *Properties) decode(r *reader, sc scope, lim *Limits) error {
	n, err := r.varint()
	if err != nil {
		return err
	}
	if n > len(r.b) {
		return errPropLength
	}
	pr := reader{r.b[:n]}
	r.b = r.b[n:]
	var seen uint64 // bit id set once property id has been read
	count, users := 0, 0
	for len(pr.b) > 0 {
		v, err := pr.varint()
		if err != nil {
			return err
		}
		if v > 0xff {
			return errPropUnknown
		}
		id := PropertyID(v)
		allowed := propScope(id)
		if allowed == 0 {
			return errPropUnknown
		}
		if allowed&sc == 0 {
			return errPropWrongPacket
		}
		if count++; count > lim.maxProperties() {
			return errTooManyProps
		}
		switch {
		case id == PropUser:
			if users++; users > lim.maxUserProperties() {
				return errTooManyUserProps
			}
		case id == PropSubscriptionID && sc == scopeOf(TypePublish):
			// A server forwards one identifier per matching subscription.
		default:
			if seen&(1<<id) != 0 {
				return errPropDuplicate
			}
			seen |= 1 << id
		}
		if err := p.decodeOne(&pr, id); err != nil {
			return err
		}
	}
	if p.AuthenticationData != nil && p.AuthenticationMethod == "" {
		return errAuthDataNoMethod
	}
	return nil
}

// decodeOne reads the value of property id into p.
func (p *Properties) decodeOne(r *reader, id PropertyID) (err error) {
	switch id {
	case PropPayloadFormat:
		p.PayloadFormat, err = r.flag()
	case PropMessageExpiry:
		p.MessageExpiry, err = r.u32ptr()
	case PropContentType:
		p.ContentType, err = r.str()
	case PropResponseTopic:
		if p.ResponseTopic, err = r.str(); err == nil && CheckTopicName(p.ResponseTopic) != nil {
			err = errResponseTopic
		}
	case PropCorrelationData:
		p.CorrelationData, err = r.binary()
	case PropSubscriptionID:
		var v int
		if v, err = r.varint(); err == nil {
			if v == 0 {
				return errPropValue
			}
			p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v))
		}
	case PropSessionExpiry:
		p.SessionExpiry, err = r.u32ptr()
	case PropAssignedClientID:
		p.AssignedClientID, err = r.str()
	case PropServerKeepAlive:
		var v uint16
		if v, err = r.u16(); err == nil {
			p.ServerKeepAlive = &v
		}
	case PropAuthenticationMethod:
		p.AuthenticationMethod, err = r.str()
	case PropAuthenticationData:
		p.AuthenticationData, err = r.binary()
	case PropRequestProblemInfo:
		p.RequestProblemInfo, err = r.boolptr()
	case PropWillDelay:
		p.WillDelay, err = r.u32()
	case PropRequestResponseInfo:
		var v byte
		v, err = r.flag()
		p.RequestResponseInfo = v == 1
	case PropResponseInfo:
		p.ResponseInfo, err = r.str()
	case PropServerReference:
		p.ServerReference, err = r.str()
	case PropReasonString:
		p.ReasonString, err = r.str()
	case PropReceiveMaximum:
		p.ReceiveMaximum, err = r.nonzeroU16()
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum, err = r.u16()
	case PropTopicAlias:
		p.TopicAlias, err = r.nonzeroU16()
	case PropMaximumQoS:
		var v byte
		if v, err = r.flag(); err == nil {
			p.MaximumQoS = &v
		}
	case PropRetainAvailable:
		p.RetainAvailable, err = r.boolptr()
	case PropUser:
		var u UserProperty
		if u.Key, err = r.str(); err == nil {
			if u.Value, err = r.str(); err == nil {
				p.User = append(p.User, u)
			}
		}
	case PropMaximumPacketSize:
		var v uint32
		if v, err = r.u32(); err == nil && v == 0 {
			err = errPropValue
		}
		p.MaximumPacketSize = v
	case PropWildcardSubAvailable:
		p.WildcardSubAvailable, err = r.boolptr()
	case PropSubscriptionIDAvailable:
		p.SubIDAvailable, err = r.boolptr()
	case PropSharedSubAvailable:
		p.SharedSubAvailable, err = r.boolptr()
	}
	return err
}

// flag reads a Byte property whose only values are 0 and 1; the
// specification calls any other value a protocol error.
func (r *reader) flag() (byte, error) {
	v, err := r.u8()
	if err == nil && v > 1 {
		err = errPropValue
	}
	return v, err
}

func (r *reader) boolptr() (*bool, error) {
	v, err := r.flag()
	if err != nil {
		return nil, err
	}
	b := v == 1
	return &b, nil
}

func (r *reader) u32ptr() (*uint32, error) {
	v, err := r.u32()
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// nonzeroU16 reads a Two Byte Integer property for which 0 is a protocol
// error (Receive Maximum, Topic Alias).
func (r *reader) nonzeroU16() (uint16, error) {
	v, err := r.u16()
	if err == nil && v == 0 {
		err = errPropValue
	}
	return v, err
}

// size validates p for scope sc and returns the length of its properties,
// not counting the property length field itself.
func (p *Properties) size(sc scope) (int, error) {
	w := propWriter{sc: sc, sizing: true}
	p.walk(&w)
	return w.n, w.err
}

// appendTo appends p's property block: its length n (from size) and the
// properties, in identifier order.
func (p *Properties) appendTo(dst []byte, n int) []byte {
	dst = appendVarint(dst, n)
	if n == 0 {
		return dst
	}
	w := propWriter{dst: dst}
	p.walk(&w)
	return w.dst
}

// propWriter is the visitor for walk. One walk sizes and validates, a second
// appends, so that the field list exists once and the encoder can write the
// lengths in front without a scratch buffer.
type propWriter struct {
	sc     scope
	sizing bool
	n      int
	err    error
	dst    []byte
}

func (w *propWriter) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// add counts a property of n value bytes and checks that it belongs in sc.
func (w *propWriter) add(id PropertyID, n int) {
	if propScope(id)&w.sc == 0 {
		w.fail(&Error{ReasonProtocolError, id.String() + " not allowed in this packet"})
	}
	w.n += 1 + n
}

func (w *propWriter) u8(id PropertyID, v byte) {
	if w.sizing {
		w.add(id, 1)
		return
	}
	w.dst = append(w.dst, byte(id), v)
}

func (w *propWriter) u16(id PropertyID, v uint16) {
	if w.sizing {
		w.add(id, 2)
		return
	}
	w.dst = appendU16(append(w.dst, byte(id)), v)
}

func (w *propWriter) u32(id PropertyID, v uint32) {
	if w.sizing {
		w.add(id, 4)
		return
	}
	w.dst = appendU32(append(w.dst, byte(id)), v)
}

func (w *propWriter) varint(id PropertyID, v uint32) {
	if w.sizing {
		if v == 0 || v > MaxRemaining {
			w.fail(errEncodeVarint)
		}
		w.add(id, varintLen(int(v)))
		return
	}
	w.dst = appendVarint(append(w.dst, byte(id)), int(v))
}

func (w *propWriter) str(id PropertyID, s string) {
	if w.sizing {
		if err := checkString(s); err != nil {
			w.fail(err)
		}
		w.add(id, 2+len(s))
		return
	}
	w.dst = appendString(append(w.dst, byte(id)), s)
}

func (w *propWriter) binary(id PropertyID, b []byte) {
	if w.sizing {
		if len(b) > 0xffff {
			w.fail(errEncodeBinary)
		}
		w.add(id, 2+len(b))
		return
	}
	w.dst = appendBinary(append(w.dst, byte(id)), b)
}

func (w *propWriter) pair(id PropertyID, k, v string) {
	if w.sizing {
		if err := checkString(k); err != nil {
			w.fail(err)
		}
		if err := checkString(v); err != nil {
			w.fail(err)
		}
		w.add(id, 4+len(k)+len(v))
		return
	}
	w.dst = appendString(appendString(append(w.dst, byte(id)), k), v)
}

func (w *propWriter) boolean(id PropertyID, v bool) {
	var b byte
	if v {
		b = 1
	}
	w.u8(id, b)
}

// walk visits every present property of p in identifier order. While sizing
// it also applies the range rules that decode enforces, so that whatever
// encodes also decodes.
func (p *Properties) walk(w *propWriter) {
	if w.sizing {
		switch {
		case p.PayloadFormat > 1, p.MaximumQoS != nil && *p.MaximumQoS > 1:
			w.fail(errPropValue)
		case len(p.SubscriptionIDs) > 1 && w.sc != scopeOf(TypePublish):
			w.fail(errPropDuplicate)
		case p.ResponseTopic != "" && CheckTopicName(p.ResponseTopic) != nil:
			w.fail(errResponseTopic)
		case p.AuthenticationData != nil && p.AuthenticationMethod == "":
			w.fail(errAuthDataNoMethod)
		}
	}
	if p.PayloadFormat != 0 {
		w.u8(PropPayloadFormat, p.PayloadFormat)
	}
	if p.MessageExpiry != nil {
		w.u32(PropMessageExpiry, *p.MessageExpiry)
	}
	if p.ContentType != "" {
		w.str(PropContentType, p.ContentType)
	}
	if p.ResponseTopic != "" {
		w.str(PropResponseTopic, p.ResponseTopic)
	}
	if p.CorrelationData != nil {
		w.binary(PropCorrelationData, p.CorrelationData)
	}
	for _, id := range p.SubscriptionIDs {
		w.varint(PropSubscriptionID, id)
	}
	if p.SessionExpiry != nil {
		w.u32(PropSessionExpiry, *p.SessionExpiry)
	}
	if p.AssignedClientID != "" {
		w.str(PropAssignedClientID, p.AssignedClientID)
	}
	if p.ServerKeepAlive != nil {
		w.u16(PropServerKeepAlive, *p.ServerKeepAlive)
	}
	if p.AuthenticationMethod != "" {
		w.str(PropAuthenticationMethod, p.AuthenticationMethod)
	}
	if p.AuthenticationData != nil {
		w.binary(PropAuthenticationData, p.AuthenticationData)
	}
	if p.RequestProblemInfo != nil {
		w.boolean(PropRequestProblemInfo, *p.RequestProblemInfo)
	}
	if p.WillDelay != 0 {
		w.u32(PropWillDelay, p.WillDelay)
	}
	if p.RequestResponseInfo {
		w.boolean(PropRequestResponseInfo, true)
	}
	if p.ResponseInfo != "" {
		w.str(PropResponseInfo, p.ResponseInfo)
	}
	if p.ServerReference != "" {
		w.str(PropServerReference, p.ServerReference)
	}
	if p.ReasonString != "" {
		w.str(PropReasonString, p.ReasonString)
	}
	if p.ReceiveMaximum != 0 {
		w.u16(PropReceiveMaximum, p.ReceiveMaximum)
	}
	if p.TopicAliasMaximum != 0 {
		w.u16(PropTopicAliasMaximum, p.TopicAliasMaximum)
	}
	if p.TopicAlias != 0 {
		w.u16(PropTopicAlias, p.TopicAlias)
	}
	if p.MaximumQoS != nil {
		w.u8(PropMaximumQoS, *p.MaximumQoS)
	}
	if p.RetainAvailable != nil {
		w.boolean(PropRetainAvailable, *p.RetainAvailable)
	}
	for _, u := range p.User {
		w.pair(PropUser, u.Key, u.Value)
	}
	if p.MaximumPacketSize != 0 {
		w.u32(PropMaximumPacketSize, p.MaximumPacketSize)
	}
	if p.WildcardSubAvailable != nil {
		w.boolean(PropWildcardSubAvailable, *p.WildcardSubAvailable)
	}
	if p.SubIDAvailable != nil {
		w.boolean(PropSubscriptionIDAvailable, *p.SubIDAvailable)
	}
	if p.SharedSubAvailable != nil {
		w.boolean(PropSharedSubAvailable, *p.SharedSubAvailable)
	}
}
