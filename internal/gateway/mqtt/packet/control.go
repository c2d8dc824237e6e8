package packet

// Pingreq is a PINGREQ packet (spec §3.12): a keep-alive probe. It has no
// body, so a zero-size value serves every connection.
type Pingreq struct{}

// Pingresp is a PINGRESP packet (spec §3.13), the answer to a PINGREQ.
type Pingresp struct{}

// Type returns TypePingreq.
func (*Pingreq) Type() Type { return TypePingreq }

// Type returns TypePingresp.
func (*Pingresp) Type() Type { return TypePingresp }

// Decode implements Packet; the body must be empty.
func (*Pingreq) Decode(version byte, fh FixedHeader, body []byte, _ Limits) error {
	return decodeEmpty(version, fh, body, TypePingreq)
}

// Decode implements Packet; the body must be empty.
func (*Pingresp) Decode(version byte, fh FixedHeader, body []byte, _ Limits) error {
	return decodeEmpty(version, fh, body, TypePingresp)
}

// AppendTo implements Packet without allocating when dst has room.
func (*Pingreq) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	return append(dst, byte(TypePingreq)<<4, 0), nil
}

// AppendTo implements Packet without allocating when dst has room.
func (*Pingresp) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	return append(dst, byte(TypePingresp)<<4, 0), nil
}

func decodeEmpty(version byte, fh FixedHeader, body []byte, t Type) error {
	if err := begin(version, fh, body, t); err != nil {
		return err
	}
	if len(body) != 0 {
		return errTrailing
	}
	return nil
}

// Disconnect is a DISCONNECT packet (spec §3.14). ReasonCode and Properties
// are 5.0 only; in 3.1.1 the packet has no body and only a client sends it.
type Disconnect struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Type returns TypeDisconnect.
func (*Disconnect) Type() Type { return TypeDisconnect }

// Decode implements Packet. A 5.0 body may stop after the reason code, or
// be empty for Normal disconnection.
func (d *Disconnect) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(version, fh, body, TypeDisconnect); err != nil {
		return err
	}
	*d = Disconnect{}
	r := reader{body}
	if version < Version5 || len(r.b) == 0 {
		return r.end()
	}
	c, _ := r.u8()
	d.ReasonCode = ReasonCode(c)
	if !d.ReasonCode.validFor(TypeDisconnect) {
		return errReasonCode
	}
	if len(r.b) == 0 {
		return nil
	}
	if err := d.Properties.decode(&r, scopeOf(TypeDisconnect), &lim); err != nil {
		return err
	}
	return r.end()
}

// AppendTo implements Packet, using the shortest form that says the same.
func (d *Disconnect) AppendTo(dst []byte, version byte) ([]byte, error) {
	return appendReasonOnly(dst, version, TypeDisconnect, d.ReasonCode, &d.Properties)
}

// Auth is an AUTH packet (spec §3.15), a step of 5.0 enhanced
// authentication. Unless it is the bare Success form (no reason code, no
// properties), it must name its Properties.AuthenticationMethod.
type Auth struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Type returns TypeAuth.
func (*Auth) Type() Type { return TypeAuth }

// errAuthNoMethod reports an AUTH without its method (§3.15.2.2.2).
var errAuthNoMethod = protocolErr("AUTH without authentication method")

// Decode implements Packet. AUTH is reserved, so malformed, before 5.0.
func (a *Auth) Decode(version byte, fh FixedHeader, body []byte, lim Limits) error {
	if err := begin(version, fh, body, TypeAuth); err != nil {
		return err
	}
	*a = Auth{}
	if len(body) == 0 {
		return nil
	}
	r := reader{body}
	c, _ := r.u8()
	a.ReasonCode = ReasonCode(c)
	if !a.ReasonCode.validFor(TypeAuth) {
		return errReasonCode
	}
	if err := a.Properties.decode(&r, scopeOf(TypeAuth), &lim); err != nil {
		return err
	}
	if err := r.end(); err != nil {
		return err
	}
	if a.Properties.AuthenticationMethod == "" {
		return errAuthNoMethod
	}
	return nil
}

// AppendTo implements Packet; it fails before 5.0.
func (a *Auth) AppendTo(dst []byte, version byte) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if version < Version5 {
		return dst, errAuthV3
	}
	pn, err := a.Properties.size(scopeOf(TypeAuth))
	if err != nil {
		return dst, err
	}
	if pn == 0 && a.ReasonCode == ReasonSuccess {
		return append(dst, byte(TypeAuth)<<4, 0), nil
	}
	if a.Properties.AuthenticationMethod == "" {
		return dst, errAuthNoMethod
	}
	return appendReasonOnly(dst, version, TypeAuth, a.ReasonCode, &a.Properties)
}

// appendReasonOnly encodes a packet whose body is an optional reason code
// and optional properties (DISCONNECT, AUTH): empty for Success without
// properties, the code alone without properties, else both (§3.14.2.1).
func appendReasonOnly(dst []byte, version byte, t Type, c ReasonCode, props *Properties) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return dst, err
	}
	if version < Version5 {
		return append(dst, byte(t)<<4, 0), nil
	}
	if !c.validFor(t) {
		return dst, errReasonCode
	}
	pn, err := props.size(scopeOf(t))
	if err != nil {
		return dst, err
	}
	var n int
	switch {
	case pn > 0:
		n = 1 + varintLen(pn) + pn
	case c != ReasonSuccess:
		n = 1
	}
	if err := checkRemaining(n); err != nil {
		return dst, err
	}
	dst = appendHeader(dst, t, 0, n)
	if n > 0 {
		dst = append(dst, byte(c))
	}
	if n > 1 {
		dst = props.appendTo(dst, pn)
	}
	return dst, nil
}
