package packet

// Connect is a CONNECT packet (spec §3.1), the first packet of a connection.
type Connect struct {
	// Version is the protocol level: Version31, Version311 or Version5.
	// Decode sets it from the packet, even when it then fails, so that the
	// caller can refuse in the client's own version. AppendTo ignores it and
	// writes the version it is given.
	Version byte
	// CleanStart is Clean Session in 3.1.1 and Clean Start in 5.0.
	CleanStart bool
	// KeepAlive is the keep-alive interval in seconds; 0 turns it off.
	KeepAlive uint16
	// ClientID may be empty in 3.1.1 with CleanStart and always in 5.0.
	ClientID string
	// Will is the will message, nil when the Will Flag is clear.
	Will *Will
	// Username is sent when HasUsername is set or it is not empty.
	Username    string
	HasUsername bool
	// Password is sent when HasPassword is set or it is not nil. After
	// Decode it aliases the body. 3.1.1 allows it only with a user name.
	Password    []byte
	HasPassword bool
	// Properties are 5.0 only.
	Properties Properties
}

// Will is the will message of a CONNECT (spec §3.1.2.5).
type Will struct {
	Topic   string
	Payload []byte // aliases the body after Decode
	QoS     byte
	Retain  bool
	// Properties are the 5.0 will properties.
	Properties Properties
}

// Type returns TypeConnect.
func (*Connect) Type() Type { return TypeConnect }

// Connect flag bits (spec §3.1.2.3).
const (
	flagReserved   = 0x01
	flagCleanStart = 0x02
	flagWill       = 0x04
	flagWillQoS    = 0x18
	flagWillRetain = 0x20
	flagPassword   = 0x40
	flagUsername   = 0x80
)

// protocolName returns the name a CONNECT of the given level carries.
func protocolName(version byte) string {
	if version == Version31 {
		return "MQIsdp"
	}
	return "MQTT"
}

// maxClientID31 is the longest client identifier MQTT 3.1 allows.
const maxClientID31 = 23

// Decode implements Packet; version is ignored, since the CONNECT names its
// own. A protocol name or level this package does not speak fails with
// ReasonUnsupportedProtocolVersion, which 3.1.1 answers with a CONNACK in
// 3.1.1 form (return code 1) whatever the level asked for. A client
// identifier the version does not allow fails with
// ReasonClientIdentifierNotValid. c.Version is set as soon as it is read.
func (c *Connect) Decode(_ byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(0, fh, body, TypeConnect); err != nil {
		return err
	}
	*c = Connect{}
	r := reader{body}
	name, err := r.binary()
	if err != nil {
		return err
	}
	if c.Version, err = r.u8(); err != nil {
		return err
	}
	switch string(name) {
	case "MQTT", "MQIsdp":
		if c.Version < Version31 || c.Version > Version5 {
			return errProtocolLevel
		}
		if string(name) != protocolName(c.Version) {
			return errProtocolName
		}
	default:
		return errProtocolName
	}
	flags, err := r.u8()
	if err != nil {
		return err
	}
	if err := checkConnectFlags(flags, c.Version); err != nil {
		return err
	}
	c.CleanStart = flags&flagCleanStart != 0
	c.HasUsername = flags&flagUsername != 0
	c.HasPassword = flags&flagPassword != 0
	if c.KeepAlive, err = r.u16(); err != nil {
		return err
	}
	if c.Version >= Version5 {
		if err := c.Properties.decode(&r, scopeOf(TypeConnect), &lim); err != nil {
			return err
		}
	}
	if c.ClientID, err = r.str(); err != nil {
		return err
	}
	if flags&flagWill != 0 {
		w := &Will{QoS: flags & flagWillQoS >> 3, Retain: flags&flagWillRetain != 0}
		if c.Version >= Version5 {
			if err := w.Properties.decode(&r, scopeWill, &lim); err != nil {
				return err
			}
		}
		if w.Topic, err = r.str(); err != nil {
			return err
		}
		if w.Payload, err = r.binary(); err != nil {
			return err
		}
		c.Will = w
	}
	if c.HasUsername {
		if c.Username, err = r.str(); err != nil {
			return err
		}
	}
	if c.HasPassword {
		if c.Password, err = r.binary(); err != nil {
			return err
		}
	}
	if err := r.end(); err != nil {
		return err
	}
	// The remaining rules concern well-formed values, so a packet that is
	// also malformed is reported as malformed.
	if c.Will != nil {
		if err := CheckTopicName(c.Will.Topic); err != nil {
			return err
		}
	}
	return checkClientID(c.ClientID, c.Version, c.CleanStart)
}

// checkConnectFlags applies §3.1.2.3: the reserved bit is 0, QoS 3 and will
// QoS or retain without a will are malformed, and 3.1.1 forbids a password
// without a user name (3.1.1 §3.1.2.9).
func checkConnectFlags(flags, version byte) error {
	switch {
	case flags&flagReserved != 0:
		return errConnectFlags
	case flags&flagWillQoS == flagWillQoS:
		return errQoS3
	case flags&flagWill == 0 && flags&(flagWillQoS|flagWillRetain) != 0:
		return errWillFlags
	case version < Version5 && flags&flagPassword != 0 && flags&flagUsername == 0:
		return errPasswordNoUser
	}
	return nil
}

// checkClientID applies the client identifier rules that need no server
// policy: 3.1 requires 1 to 23 characters, 3.1.1 allows an empty one only
// with Clean Session (3.1.1 §3.1.3.1), 5.0 always (the server then assigns
// one).
func checkClientID(id string, version byte, clean bool) error {
	switch version {
	case Version31:
		if id == "" || len(id) > maxClientID31 {
			return errClientID
		}
	case Version311:
		if id == "" && !clean {
			return errClientID
		}
	}
	return nil
}

// AppendTo implements Packet, writing version as the protocol level.
func (c *Connect) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if err := checkString(c.ClientID); err != nil {
		return dst, err
	}
	if err := checkClientID(c.ClientID, version, c.CleanStart); err != nil {
		return dst, err
	}
	hasUser := c.HasUsername || c.Username != ""
	hasPass := c.HasPassword || c.Password != nil
	if hasUser {
		if err := checkString(c.Username); err != nil {
			return dst, err
		}
	}
	if len(c.Password) > 0xffff {
		return dst, errEncodeBinary
	}
	if version < Version5 && hasPass && !hasUser {
		return dst, errPasswordNoUser
	}
	name := protocolName(version)
	n := 2 + len(name) + 1 + 1 + 2 + 2 + len(c.ClientID)
	var flags byte
	if c.CleanStart {
		flags |= flagCleanStart
	}
	if hasUser {
		flags |= flagUsername
		n += 2 + len(c.Username)
	}
	if hasPass {
		flags |= flagPassword
		n += 2 + len(c.Password)
	}
	var pn, wpn int
	if version >= Version5 {
		var err error
		if pn, err = c.Properties.size(scopeOf(TypeConnect)); err != nil {
			return dst, err
		}
		n += varintLen(pn) + pn
	}
	if w := c.Will; w != nil {
		if w.QoS > 2 {
			return dst, errQoS3
		}
		if err := CheckTopicName(w.Topic); err != nil {
			return dst, err
		}
		if len(w.Payload) > 0xffff {
			return dst, errEncodeBinary
		}
		flags |= flagWill | w.QoS<<3
		if w.Retain {
			flags |= flagWillRetain
		}
		n += 2 + len(w.Topic) + 2 + len(w.Payload)
		if version >= Version5 {
			var err error
			if wpn, err = w.Properties.size(scopeWill); err != nil {
				return dst, err
			}
			n += varintLen(wpn) + wpn
		}
	}
	if err := checkRemaining(n); err != nil {
		return dst, err
	}
	dst = appendHeader(dst, TypeConnect, 0, n)
	dst = append(appendString(dst, name), version, flags)
	dst = appendU16(dst, c.KeepAlive)
	if version >= Version5 {
		dst = c.Properties.appendTo(dst, pn)
	}
	dst = appendString(dst, c.ClientID)
	if w := c.Will; w != nil {
		if version >= Version5 {
			dst = w.Properties.appendTo(dst, wpn)
		}
		dst = appendBinary(appendString(dst, w.Topic), w.Payload)
	}
	if hasUser {
		dst = appendString(dst, c.Username)
	}
	if hasPass {
		dst = appendBinary(dst, c.Password)
	}
	return dst, nil
}

// Connack is a CONNACK packet (spec §3.2). ReasonCode always holds the 5.0
// code: for 3.1.1 AppendTo writes the nearest return code (Unsupported
// Protocol Version as 1, Client Identifier not valid as 2, Bad User Name or
// Password as 4, Not authorized as 5, any other failure as 3, Server
// unavailable) and Decode maps the return codes back.
type Connack struct {
	// SessionPresent says the server resumed a session; only with success.
	SessionPresent bool
	ReasonCode     ReasonCode
	// Properties are 5.0 only.
	Properties Properties
}

// Type returns TypeConnack.
func (*Connack) Type() Type { return TypeConnack }

// Decode implements Packet.
func (c *Connack) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(version, fh, body, TypeConnack); err != nil {
		return err
	}
	*c = Connack{}
	r := reader{body}
	flags, err := r.u8()
	if err != nil {
		return err
	}
	if flags&^0x01 != 0 {
		return errFlags
	}
	c.SessionPresent = flags == 0x01
	code, err := r.u8()
	if err != nil {
		return err
	}
	if version >= Version5 {
		c.ReasonCode = ReasonCode(code)
		if !c.ReasonCode.validFor(TypeConnack) {
			return errReasonCode
		}
		if err := c.Properties.decode(&r, scopeOf(TypeConnack), &lim); err != nil {
			return err
		}
	} else {
		var ok bool
		if c.ReasonCode, ok = connackFromV3(code); !ok {
			return errReasonCode
		}
	}
	if err := r.end(); err != nil {
		return err
	}
	if c.SessionPresent && c.ReasonCode != ReasonSuccess {
		return errSessionPresent
	}
	return nil
}

// AppendTo implements Packet.
func (c *Connack) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if c.SessionPresent && c.ReasonCode != ReasonSuccess {
		return dst, errSessionPresent
	}
	var flags byte
	if c.SessionPresent {
		flags = 0x01
	}
	if version < Version5 {
		return append(appendHeader(dst, TypeConnack, 0, 2), flags, c.ReasonCode.connackV3()), nil
	}
	if !c.ReasonCode.validFor(TypeConnack) {
		return dst, errReasonCode
	}
	pn, err := c.Properties.size(scopeOf(TypeConnack))
	if err != nil {
		return dst, err
	}
	n := 2 + varintLen(pn) + pn
	if err := checkRemaining(n); err != nil {
		return dst, err
	}
	dst = append(appendHeader(dst, TypeConnack, 0, n), flags, byte(c.ReasonCode))
	return c.Properties.appendTo(dst, pn), nil
}
