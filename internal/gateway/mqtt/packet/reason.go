package packet

import "strconv"

// ReasonCode is an MQTT 5.0 reason code (spec §2.4). It is also the error
// type of this package: every decoding failure carries the code the peer
// should be told, so the gateway can answer a bad packet with a CONNACK or
// DISCONNECT in the client's own version without a translation table of its
// own. Codes below 0x80 report success; 0x80 and above report failure.
//
// In 3.1.1 only CONNACK and SUBACK carry codes; Connack and Suback translate
// to and from the 3.1.1 values so that a ReasonCode always holds the 5.0 value.
type ReasonCode byte

// Reason codes, named as in the MQTT 5.0 specification. Several codes share
// the value 0x00 (and 0x01, 0x02 in SUBACK); the name depends on the packet.
const (
	ReasonSuccess                             ReasonCode = 0x00
	ReasonNormalDisconnection                 ReasonCode = 0x00
	ReasonGrantedQoS0                         ReasonCode = 0x00
	ReasonGrantedQoS1                         ReasonCode = 0x01
	ReasonGrantedQoS2                         ReasonCode = 0x02
	ReasonDisconnectWithWill                  ReasonCode = 0x04
	ReasonNoMatchingSubscribers               ReasonCode = 0x10
	ReasonNoSubscriptionExisted               ReasonCode = 0x11
	ReasonContinueAuthentication              ReasonCode = 0x18
	ReasonReAuthenticate                      ReasonCode = 0x19
	ReasonUnspecifiedError                    ReasonCode = 0x80
	ReasonMalformedPacket                     ReasonCode = 0x81
	ReasonProtocolError                       ReasonCode = 0x82
	ReasonImplementationSpecificError         ReasonCode = 0x83
	ReasonUnsupportedProtocolVersion          ReasonCode = 0x84
	ReasonClientIdentifierNotValid            ReasonCode = 0x85
	ReasonBadUserNameOrPassword               ReasonCode = 0x86
	ReasonNotAuthorized                       ReasonCode = 0x87
	ReasonServerUnavailable                   ReasonCode = 0x88
	ReasonServerBusy                          ReasonCode = 0x89
	ReasonBanned                              ReasonCode = 0x8A
	ReasonServerShuttingDown                  ReasonCode = 0x8B
	ReasonBadAuthenticationMethod             ReasonCode = 0x8C
	ReasonKeepAliveTimeout                    ReasonCode = 0x8D
	ReasonSessionTakenOver                    ReasonCode = 0x8E
	ReasonTopicFilterInvalid                  ReasonCode = 0x8F
	ReasonTopicNameInvalid                    ReasonCode = 0x90
	ReasonPacketIdentifierInUse               ReasonCode = 0x91
	ReasonPacketIdentifierNotFound            ReasonCode = 0x92
	ReasonReceiveMaximumExceeded              ReasonCode = 0x93
	ReasonTopicAliasInvalid                   ReasonCode = 0x94
	ReasonPacketTooLarge                      ReasonCode = 0x95
	ReasonMessageRateTooHigh                  ReasonCode = 0x96
	ReasonQuotaExceeded                       ReasonCode = 0x97
	ReasonAdministrativeAction                ReasonCode = 0x98
	ReasonPayloadFormatInvalid                ReasonCode = 0x99
	ReasonRetainNotSupported                  ReasonCode = 0x9A
	ReasonQoSNotSupported                     ReasonCode = 0x9B
	ReasonUseAnotherServer                    ReasonCode = 0x9C
	ReasonServerMoved                         ReasonCode = 0x9D
	ReasonSharedSubscriptionsNotSupported     ReasonCode = 0x9E
	ReasonConnectionRateExceeded              ReasonCode = 0x9F
	ReasonMaximumConnectTime                  ReasonCode = 0xA0
	ReasonSubscriptionIdentifiersNotSupported ReasonCode = 0xA1
	ReasonWildcardSubscriptionsNotSupported   ReasonCode = 0xA2
)

// String returns the specification's name for c. For the shared values 0x00
// to 0x02 it returns the generic name (Success, Granted QoS 1, Granted QoS 2).
func (c ReasonCode) String() string {
	switch c {
	case ReasonSuccess:
		return "Success"
	case ReasonGrantedQoS1:
		return "Granted QoS 1"
	case ReasonGrantedQoS2:
		return "Granted QoS 2"
	case ReasonDisconnectWithWill:
		return "Disconnect with Will Message"
	case ReasonNoMatchingSubscribers:
		return "No matching subscribers"
	case ReasonNoSubscriptionExisted:
		return "No subscription existed"
	case ReasonContinueAuthentication:
		return "Continue authentication"
	case ReasonReAuthenticate:
		return "Re-authenticate"
	case ReasonUnspecifiedError:
		return "Unspecified error"
	case ReasonMalformedPacket:
		return "Malformed Packet"
	case ReasonProtocolError:
		return "Protocol Error"
	case ReasonImplementationSpecificError:
		return "Implementation specific error"
	case ReasonUnsupportedProtocolVersion:
		return "Unsupported Protocol Version"
	case ReasonClientIdentifierNotValid:
		return "Client Identifier not valid"
	case ReasonBadUserNameOrPassword:
		return "Bad User Name or Password"
	case ReasonNotAuthorized:
		return "Not authorized"
	case ReasonServerUnavailable:
		return "Server unavailable"
	case ReasonServerBusy:
		return "Server busy"
	case ReasonBanned:
		return "Banned"
	case ReasonServerShuttingDown:
		return "Server shutting down"
	case ReasonBadAuthenticationMethod:
		return "Bad authentication method"
	case ReasonKeepAliveTimeout:
		return "Keep Alive timeout"
	case ReasonSessionTakenOver:
		return "Session taken over"
	case ReasonTopicFilterInvalid:
		return "Topic Filter invalid"
	case ReasonTopicNameInvalid:
		return "Topic Name invalid"
	case ReasonPacketIdentifierInUse:
		return "Packet Identifier in use"
	case ReasonPacketIdentifierNotFound:
		return "Packet Identifier not found"
	case ReasonReceiveMaximumExceeded:
		return "Receive Maximum exceeded"
	case ReasonTopicAliasInvalid:
		return "Topic Alias invalid"
	case ReasonPacketTooLarge:
		return "Packet too large"
	case ReasonMessageRateTooHigh:
		return "Message rate too high"
	case ReasonQuotaExceeded:
		return "Quota exceeded"
	case ReasonAdministrativeAction:
		return "Administrative action"
	case ReasonPayloadFormatInvalid:
		return "Payload format invalid"
	case ReasonRetainNotSupported:
		return "Retain not supported"
	case ReasonQoSNotSupported:
		return "QoS not supported"
	case ReasonUseAnotherServer:
		return "Use another server"
	case ReasonServerMoved:
		return "Server moved"
	case ReasonSharedSubscriptionsNotSupported:
		return "Shared Subscriptions not supported"
	case ReasonConnectionRateExceeded:
		return "Connection rate exceeded"
	case ReasonMaximumConnectTime:
		return "Maximum connect time"
	case ReasonSubscriptionIdentifiersNotSupported:
		return "Subscription Identifiers not supported"
	case ReasonWildcardSubscriptionsNotSupported:
		return "Wildcard Subscriptions not supported"
	}
	return "Reason Code 0x" + strconv.FormatUint(uint64(c), 16)
}

// Error returns the specification's name for c, so that a ReasonCode can be
// returned, wrapped and matched with errors.Is and errors.As like any error.
func (c ReasonCode) Error() string { return c.String() }

// IsError reports whether c reports a failure (0x80 and above, spec §2.4).
func (c ReasonCode) IsError() bool { return c >= 0x80 }

// validFor reports whether c may appear in a 5.0 packet of type t: each
// acknowledgement has its own table in the specification, and a code outside
// it is a protocol error.
func (c ReasonCode) validFor(t Type) bool {
	switch t {
	case TypeConnack:
		switch c {
		case 0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
			0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F:
			return true
		}
	case TypePuback, TypePubrec:
		switch c {
		case 0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99:
			return true
		}
	case TypePubrel, TypePubcomp:
		return c == 0x00 || c == 0x92
	case TypeSuback:
		switch c {
		case 0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2:
			return true
		}
	case TypeUnsuback:
		switch c {
		case 0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91:
			return true
		}
	case TypeDisconnect:
		switch c {
		case 0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E,
			0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B,
			0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2:
			return true
		}
	case TypeAuth:
		return c == 0x00 || c == 0x18 || c == 0x19
	}
	return false
}

// connackV3 returns the 3.1.1 CONNACK return code (§3.2.2.3) closest to c.
// 3.1.1 has only five refusals, so every 5.0 failure without a counterpart
// becomes "Server unavailable", the one that invites a retry elsewhere.
func (c ReasonCode) connackV3() byte {
	switch c {
	case ReasonSuccess:
		return 0
	case ReasonUnsupportedProtocolVersion:
		return 1
	case ReasonClientIdentifierNotValid:
		return 2
	case ReasonBadUserNameOrPassword, ReasonBadAuthenticationMethod:
		return 4
	case ReasonNotAuthorized, ReasonBanned:
		return 5
	}
	return 3
}

// connackFromV3 maps a 3.1.1 CONNACK return code to its 5.0 equivalent.
func connackFromV3(b byte) (ReasonCode, bool) {
	switch b {
	case 0:
		return ReasonSuccess, true
	case 1:
		return ReasonUnsupportedProtocolVersion, true
	case 2:
		return ReasonClientIdentifierNotValid, true
	case 3:
		return ReasonServerUnavailable, true
	case 4:
		return ReasonBadUserNameOrPassword, true
	case 5:
		return ReasonNotAuthorized, true
	}
	return 0, false
}
