package packet

import "errors"

// Error is a decoding or encoding failure. Code is what the peer should be
// told; Unwrap returns it, so errors.Is(err, ReasonMalformedPacket) and
// errors.As(err, &code) both work on any error from this package.
//
// The package's errors are preallocated values: rejecting a hostile packet
// allocates nothing.
type Error struct {
	Code ReasonCode // the 5.0 reason code for the failure
	Msg  string     // what was wrong, for logs
}

// Error returns "packet: " followed by the message and the reason's name.
func (e *Error) Error() string { return "packet: " + e.Msg + " (" + e.Code.String() + ")" }

// Unwrap returns e.Code.
func (e *Error) Unwrap() error { return e.Code }

// CodeOf returns the reason code carried by err: ReasonSuccess for nil, the
// code of an *Error or ReasonCode in err's chain, and ReasonUnspecifiedError
// for any other error (an I/O error, for instance).
func CodeOf(err error) ReasonCode {
	if err == nil {
		return ReasonSuccess
	}
	var c ReasonCode
	if errors.As(err, &c) {
		return c
	}
	return ReasonUnspecifiedError
}

// ErrNeedMore is returned by ParseFixedHeader when b ends before the fixed
// header does. It is not a failure: read more bytes and call again.
var ErrNeedMore = errors.New("packet: need more bytes")

// ErrPacketTooLarge is returned by ParseFixedHeader and ReadPacket when the
// packet announced is bigger than the caller's maximum, before anything is
// allocated for it.
var ErrPacketTooLarge = &Error{ReasonPacketTooLarge, "packet exceeds the maximum packet size"}

func malformed(msg string) *Error   { return &Error{ReasonMalformedPacket, msg} }
func protocolErr(msg string) *Error { return &Error{ReasonProtocolError, msg} }

// Decoding errors. Each names the rule that was broken; the code follows the
// specification's classification (§4.13: a packet that cannot be parsed is
// Malformed, one that parses but breaks a rule is a Protocol Error).
var (
	errReservedType     = malformed("reserved packet type")
	errFlags            = malformed("reserved fixed-header flag bits set")
	errQoS3             = malformed("QoS 3")
	errVarintLong       = malformed("variable byte integer longer than 4 bytes")
	errVarintPadded     = malformed("variable byte integer not in its shortest form")
	errShort            = malformed("packet ends inside a field")
	errTrailing         = malformed("bytes after the last field")
	errBodyLength       = malformed("body length differs from the remaining length")
	errUTF8             = malformed("string is not well-formed UTF-8 or contains U+0000")
	errPropLength       = malformed("property length exceeds the packet")
	errPropUnknown      = malformed("unknown property identifier")
	errPropWrongPacket  = malformed("property not allowed in this packet")
	errPropDuplicate    = protocolErr("property included more than once")
	errPropValue        = protocolErr("property value out of range")
	errAuthDataNoMethod = protocolErr("authentication data without authentication method")
	errResponseTopic    = protocolErr("response topic is not a valid topic name")
	errReasonCode       = protocolErr("reason code not allowed in this packet")
	errPacketIDZero     = protocolErr("packet identifier 0")
	errDupQoS0          = protocolErr("DUP flag set on a QoS 0 PUBLISH")
	errNoTopic          = protocolErr("empty topic name without a topic alias")
	errNoSubscriptions  = protocolErr("no topic filters")
	errSubOptions       = malformed("reserved subscription option bits set")
	errRetainHandling   = protocolErr("retain handling 3")
	errSharedNoLocal    = protocolErr("no local set on a shared subscription")
	errConnectFlags     = malformed("reserved connect flag set")
	errWillFlags        = malformed("will QoS or retain without will flag")
	errPasswordNoUser   = malformed("password without user name")
	errSessionPresent   = protocolErr("session present on a refused connection")
	errProtocolName     = &Error{ReasonUnsupportedProtocolVersion, "unknown protocol name"}
	errProtocolLevel    = &Error{ReasonUnsupportedProtocolVersion, "unsupported protocol level"}
	errClientID         = &Error{ReasonClientIdentifierNotValid, "client identifier not acceptable"}
	errTopicName        = &Error{ReasonTopicNameInvalid, "invalid topic name"}
	errTopicFilter      = &Error{ReasonTopicFilterInvalid, "invalid topic filter"}
	errTooManyProps     = &Error{ReasonQuotaExceeded, "too many properties"}
	errTooManyUserProps = &Error{ReasonQuotaExceeded, "too many user properties"}
	errTooManyFilters   = &Error{ReasonQuotaExceeded, "too many topic filters"}
	errAuthV3           = malformed("AUTH before MQTT 5.0")
	errVersion          = protocolErr("unsupported protocol version")
	errWrongType        = protocolErr("fixed header is for another packet type")
	errEncodeString     = protocolErr("string longer than 65535 bytes")
	errEncodeBinary     = protocolErr("binary data longer than 65535 bytes")
	errEncodeTooLarge   = &Error{ReasonPacketTooLarge, "packet longer than the protocol maximum"}
	errEncodeVarint     = protocolErr("variable byte integer out of range")
)
