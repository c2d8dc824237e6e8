package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/strictjson"
)

// Frame types. Every frame is one WebSocket text message holding one JSON
// object whose "type" names it (docs/protocol.md).
const (
	TypeHello   = "hello"   // server → client, first: the connection is authenticated and attached
	TypeMessage = "message" // server → client: one push
	TypeAck     = "ack"     // client → server: acknowledge by id
	TypePing    = "ping"    // both ways: answer with pong
	TypePong    = "pong"    // both ways
	TypeError   = "error"   // server → client: a frame was refused; the connection stays
)

// Error codes of error frames. They are part of the protocol: never change
// one.
const (
	CodeBadFrame    = "bad_frame"    // not a JSON object of a known shape, or a binary frame
	CodeUnknownType = "unknown_type" // a well-formed frame of a type this server does not know
	CodeTooManyIDs  = "too_many_ids" // an ack with more IDs than the server takes at once
	CodeInternal    = "internal"     // the server failed; the frame may be sent again
)

// MaxIDLen is the longest message ID an ack may carry. Herald's IDs are
// far shorter; the cap keeps a hostile frame from making large keys.
const MaxIDLen = 128

// Frame is one frame a client sends.
type Frame struct {
	Type string   `json:"type"`
	IDs  []string `json:"ids,omitempty"` // ack only: at least one
}

// FrameError is why a client frame was refused: what the error frame says.
type FrameError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *FrameError) Error() string { return "ws: " + e.Code + ": " + e.Message }

func badFrame(format string, args ...any) *FrameError {
	return &FrameError{Code: CodeBadFrame, Message: fmt.Sprintf(format, args...)}
}

// DecodeFrame decodes one client frame strictly: a single JSON object, no
// unknown keys, no key twice, nothing after it, the fields its type needs
// and no others. Errors are *FrameError. It does not limit the number of
// IDs; the gateway does, with its configured batch size.
func DecodeFrame(b []byte) (Frame, error) {
	var f Frame
	var dk *strictjson.DuplicateKeyError
	switch err := strictjson.Decode(b, &f); {
	case err == nil:
	case errors.As(err, &dk):
		return Frame{}, badFrame("%q appears twice in the frame", dk.Key)
	case errors.Is(err, strictjson.ErrTrailingData):
		return Frame{}, badFrame("data after the JSON object")
	default:
		return Frame{}, badFrame("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	switch f.Type {
	case TypeAck:
		if len(f.IDs) == 0 {
			return Frame{}, badFrame("an ack needs ids: a non-empty list of message IDs")
		}
		for _, id := range f.IDs {
			if id == "" || len(id) > MaxIDLen {
				return Frame{}, badFrame("a message ID is 1 to %d bytes", MaxIDLen)
			}
		}
	case TypePing, TypePong:
		if f.IDs != nil {
			return Frame{}, badFrame("a %s carries no ids", f.Type)
		}
	case "":
		return Frame{}, badFrame(`a frame needs a "type"`)
	default:
		return Frame{}, &FrameError{Code: CodeUnknownType, Message: fmt.Sprintf("unknown frame type %q", truncate(f.Type, 32))}
	}
	return f, nil
}

// EncodeFrame is DecodeFrame's inverse, for clients and tests.
func EncodeFrame(f Frame) []byte {
	b, _ := json.Marshal(f)
	return b
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// The frames the server sends.

type helloFrame struct {
	Type string `json:"type"`
	// PingInterval is how long, in seconds, the server waits for a frame
	// before it pings; it closes the connection after twice that in
	// silence.
	PingInterval int `json:"ping_interval"`
	Window       int `json:"window"`      // most unacknowledged messages in flight
	MaxFrame     int `json:"max_frame"`   // bytes of one client frame
	MaxAckIDs    int `json:"max_ack_ids"` // IDs in one ack
}

type messageFrame struct {
	Type    string         `json:"type"`
	Message push.Delivered `json:"message"`
	// Redelivery is set when the message went out on an earlier connection
	// and was not acknowledged there.
	Redelivery bool `json:"redelivery,omitempty"`
}

type errorFrame struct {
	Type string `json:"type"`
	FrameError
}

var (
	pingFrame = []byte(`{"type":"ping"}`)
	pongFrame = []byte(`{"type":"pong"}`)
)

func encodeMessage(m *push.Message, redelivery bool) ([]byte, error) {
	return json.Marshal(messageFrame{Type: TypeMessage, Message: m.Delivered(), Redelivery: redelivery})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only for the server's own frames, whose fields always encode
	}
	return b
}

func encodeError(e *FrameError) []byte {
	b, _ := json.Marshal(errorFrame{Type: TypeError, FrameError: *e})
	return b
}
