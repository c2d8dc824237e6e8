package mozpush

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/heraldpush/herald/internal/strictjson"
)

// Message types (the "messageType" of a message). The user agent sends
// hello, register, unregister, ack, nack, ping (usually as "{}") and
// broadcast_subscribe; the server sends hello, register, unregister,
// notification and the "{}" pong.
const (
	TypeHello              = "hello"
	TypeRegister           = "register"
	TypeUnregister         = "unregister"
	TypeAck                = "ack"
	TypeNack               = "nack"
	TypePing               = "ping"
	TypeBroadcastSubscribe = "broadcast_subscribe"
	TypeNotification       = "notification"
)

// Ack codes (Firefox's nsIPushErrorReporter). Every code removes the message
// from the inbox: 101 and 102 say that Firefox could not use it, and the
// same ciphertext sent again would fail the same way (Firefox has also
// recorded its version, so it would drop it as a duplicate).
const (
	AckDelivered       = 100 // the service worker got the message
	AckDecryptionError = 101 // the payload did not decrypt
	AckNotDelivered    = 102 // no service worker took it (no permission, quota, no record)
)

// Limits on what a user agent may send. They keep a hostile client from
// making the server hold large values; Firefox stays far below them.
const (
	// MaxUAIDLen is the longest UAID Firefox accepts from a server, so a
	// longer one is not Herald's and is treated as absent.
	MaxUAIDLen = 128
	// MaxVersionLen is the longest version an ack or nack may name.
	MaxVersionLen = 128
	// MaxKeyLen bounds the application server key of a register, in
	// characters: a 65-byte P-256 point is 88 in padded base64.
	MaxKeyLen = 256
	// MaxUpdates bounds the updates of one ack.
	MaxUpdates = 1000
)

// Message is one message from the user agent, decoded. Fields a type does
// not use are zero.
type Message struct {
	Type string

	// hello
	UAID       string   // the user agent's ID from an earlier hello; empty for a new one
	ChannelIDs []string // the channels the user agent believes it has; informational
	UseWebPush bool     // the user agent can take data (always true for Firefox)

	// register, unregister
	ChannelID string // a UUID chosen by the user agent, naming the subscription
	Key       string // register: the application server key, base64url (padded or not); optional

	// unregister (a reason, 200–202), nack (301–303)
	Code int
	// nack: the version (message ID) whose delivery to the service worker failed
	Version string

	// ack
	Updates []Update
}

// Update acknowledges one notification.
type Update struct {
	ChannelID string `json:"channelID"`
	Version   string `json:"version"`
	Code      int    `json:"code,omitempty"` // AckDelivered when absent
}

// ProtocolError is why a user agent's message was refused. Like Mozilla's
// own server, Herald answers one by closing the connection: the protocol
// has no error message, and Firefox reconnects and starts over with hello.
type ProtocolError struct{ Reason string }

func (e *ProtocolError) Error() string { return "mozpush: " + e.Reason }

func protoErr(format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// wire is a user agent message as JSON. Pointers tell an absent or null
// field from a zero one. Unknown keys are ignored, as Mozilla's server
// does, so that a newer Firefox's extra fields do not break it.
type wire struct {
	MessageType *string          `json:"messageType"`
	UAID        *string          `json:"uaid"`
	ChannelIDs  []string         `json:"channelIDs"`
	UseWebPush  *bool            `json:"use_webpush"`
	Broadcasts  *json.RawMessage `json:"broadcasts"`
	ChannelID   *string          `json:"channelID"`
	Key         *string          `json:"key"`
	Code        *int             `json:"code"`
	Version     *string          `json:"version"`
	Updates     []Update         `json:"updates"`
}

// wireSchema compares a message's keys as encoding/json matches them.
var wireSchema = strictjson.SchemaOf(&wire{})

// Decode decodes one message from the user agent: a single JSON object
// whose messageType names it ("{}" is a ping). It checks what each type
// needs: channel IDs are UUIDs, versions and keys are bounded, and no
// object names a key twice (which encoding/json would resolve silently to
// the last). A hello's UAID is returned as sent; whether it names a
// registration is the gateway's question. Errors are *ProtocolError.
func Decode(b []byte) (Message, error) {
	if !utf8.Valid(b) {
		return Message{}, protoErr("not UTF-8")
	}
	var dk *strictjson.DuplicateKeyError
	if err := strictjson.CheckKeys(b, wireSchema); errors.As(err, &dk) {
		return Message{}, protoErr("%q appears twice in one object", truncate(dk.Key, 32))
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		return Message{}, protoErr("not a JSON object of the protocol: %v", trimJSONErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Message{}, protoErr("data after the JSON object")
	}
	if w.MessageType == nil {
		// An empty object is the protocol's ping.
		var obj map[string]json.RawMessage
		if json.Unmarshal(b, &obj) == nil && obj != nil && len(obj) == 0 {
			return Message{Type: TypePing}, nil
		}
		return Message{}, protoErr(`a message needs a "messageType"`)
	}
	m := Message{Type: *w.MessageType}
	switch m.Type {
	case TypeHello:
		if w.UAID != nil {
			m.UAID = *w.UAID
		}
		m.ChannelIDs = w.ChannelIDs
		m.UseWebPush = w.UseWebPush != nil && *w.UseWebPush
	case TypeRegister, TypeUnregister:
		if w.ChannelID == nil || !validUUID(*w.ChannelID) {
			return Message{}, protoErr("%s needs a channelID that is a UUID", m.Type)
		}
		m.ChannelID = *w.ChannelID
		if m.Type == TypeRegister && w.Key != nil {
			if len(*w.Key) > MaxKeyLen {
				return Message{}, protoErr("the key is over %d characters", MaxKeyLen)
			}
			m.Key = *w.Key
		}
		if m.Type == TypeUnregister && w.Code != nil {
			m.Code = *w.Code
		}
	case TypeAck:
		if w.Updates == nil {
			return Message{}, protoErr("an ack needs updates")
		}
		if len(w.Updates) > MaxUpdates {
			return Message{}, protoErr("an ack of more than %d updates", MaxUpdates)
		}
		for _, u := range w.Updates {
			if !validUUID(u.ChannelID) || !validVersion(u.Version) {
				return Message{}, protoErr("an ack update needs a UUID channelID and a version of 1 to %d bytes", MaxVersionLen)
			}
		}
		m.Updates = w.Updates
	case TypeNack:
		if w.Version == nil || !validVersion(*w.Version) {
			return Message{}, protoErr("a nack needs a version of 1 to %d bytes", MaxVersionLen)
		}
		m.Version = *w.Version
		if w.Code != nil {
			m.Code = *w.Code
		}
	case TypePing:
	case TypeBroadcastSubscribe:
		// Herald has no broadcasts (Firefox uses them for remote settings);
		// the subscription is accepted and nothing is ever sent for it.
	default:
		return Message{}, protoErr("unknown messageType %q", truncate(m.Type, 32))
	}
	return m, nil
}

// Encode is Decode's inverse, for clients and tests. A ping encodes as
// "{}", as Firefox sends it.
func Encode(m Message) []byte {
	if m.Type == TypePing {
		return []byte("{}")
	}
	w := wire{MessageType: &m.Type}
	switch m.Type {
	case TypeHello:
		w.UAID, w.ChannelIDs, w.UseWebPush = &m.UAID, m.ChannelIDs, &m.UseWebPush
	case TypeRegister:
		w.ChannelID = &m.ChannelID
		if m.Key != "" {
			w.Key = &m.Key
		}
	case TypeUnregister:
		w.ChannelID = &m.ChannelID
		if m.Code != 0 {
			w.Code = &m.Code
		}
	case TypeAck:
		w.Updates = m.Updates
		if w.Updates == nil {
			w.Updates = []Update{}
		}
	case TypeNack:
		w.Version = &m.Version
		if m.Code != 0 {
			w.Code = &m.Code
		}
	case TypeBroadcastSubscribe:
		empty := json.RawMessage("{}")
		w.Broadcasts = &empty
	}
	b, _ := json.Marshal(w)
	return b
}

// validUUID reports whether s is a UUID in its 36-character form, which is
// how Firefox names channels; either case is taken.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func validVersion(v string) bool { return v != "" && len(v) <= MaxVersionLen }

func trimJSONErr(err error) string {
	s := err.Error()
	if len(s) > 5 && s[:5] == "json:" {
		s = s[6:]
	}
	return truncate(s, 80)
}

// truncate cuts s to at most n bytes on a rune boundary, so that a reason
// fits a close frame (123 bytes).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// The messages the server sends.

type helloReply struct {
	MessageType string `json:"messageType"`
	UAID        string `json:"uaid"`
	Status      int    `json:"status"`
	UseWebPush  bool   `json:"use_webpush"`
	// Broadcasts is always empty: Herald offers no broadcast services.
	Broadcasts struct{} `json:"broadcasts"`
}

type registerReply struct {
	MessageType  string `json:"messageType"`
	ChannelID    string `json:"channelID"`
	Status       int    `json:"status"`
	PushEndpoint string `json:"pushEndpoint,omitempty"`
}

type unregisterReply struct {
	MessageType string `json:"messageType"`
	ChannelID   string `json:"channelID"`
	Status      int    `json:"status"`
}

// Notification is one push as the server sends it. Exported for clients and
// tests that decode it.
type Notification struct {
	MessageType string `json:"messageType"`
	ChannelID   string `json:"channelID"`
	// Version identifies the message: it is the Herald message ID, which
	// Firefox echoes in its ack and uses to drop a redelivered duplicate.
	Version string `json:"version"`
	// Data is the encrypted body in unpadded base64url; absent for a push
	// without a body.
	Data string `json:"data,omitempty"`
	// Headers carry what decryption needs: "encoding" (aes128gcm), and for
	// the older aesgcm also "crypto_key" and "encryption". Absent with Data.
	Headers map[string]string `json:"headers,omitempty"`
	// TTL is the seconds the push was accepted with. Firefox ignores it;
	// it helps a reader of the wire.
	TTL int64 `json:"ttl"`
}

var pong = []byte("{}")

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only for the server's own messages, whose fields always encode
	}
	return b
}
