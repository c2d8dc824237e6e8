// Package apierr is the catalogue of errors Herald's HTTP surface returns:
// each has a stable code, an HTTP status and a message, rendered as
// {"error":{"code":...,"message":...}}. Clients may rely on the codes.
package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/internal/strictjson"
)

// Error is one API error.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// RetryAfter is how long a client should wait before trying again; a
	// 429 says it in Retry-After, in whole seconds rounded up (1 when zero).
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// With returns a copy of e with a more specific message.
func (e *Error) With(format string, args ...any) *Error {
	c := *e
	c.Message = fmt.Sprintf(format, args...)
	return &c
}

// RetryIn returns a copy of e that tells the client to retry after d.
func (e *Error) RetryIn(d time.Duration) *Error {
	c := *e
	c.RetryAfter = d
	return &c
}

func newError(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// The catalogue. Codes are part of the public API: never change one.
var (
	BadJSON          = newError(400, "bad_json", "the body is not valid JSON of the expected shape")
	DuplicateKey     = newError(400, "duplicate_key", "an object in the body names the same key twice")
	BadAudience      = newError(400, "bad_audience", "audience must be \"all\" or an object of registration_id, alias, tag, tag_and, tag_not")
	EmptyAudience    = newError(400, "empty_audience", "the audience names nobody")
	TooManyIDs       = newError(400, "too_many_ids", "too many registration IDs and aliases in one push")
	EmptyMessage     = newError(400, "empty_message", "a push needs a notification or a message")
	PayloadTooLarge  = newError(413, "payload_too_large", "notification and message are too large")
	BodyTooLarge     = newError(413, "body_too_large", "the request body is too large")
	BadTTL           = newError(400, "bad_ttl", "ttl must be a whole number of seconds, 0 or more")
	BadOption        = newError(400, "bad_option", "an option is invalid")
	BadPlatform      = newError(400, "bad_platform", "platform must be android, ios, web or other")
	BadName          = newError(400, "bad_name", "aliases, tags and names are 1 to 128 bytes of UTF-8 without control characters")
	ReservedKey      = newError(400, "reserved_key", "the message uses a key only Herald writes")
	BadParameter     = newError(400, "bad_parameter", "a query parameter is invalid")
	BadToken         = newError(400, "bad_token", "apns_token must be 16 to 100 bytes in hex, fcm_token 1 to 4096 bytes of letters, digits and - _ : .")
	BadSubscription  = newError(400, "bad_subscription", "webpush must be {endpoint, keys: {p256dh, auth}}: an https endpoint of at most 2048 bytes, a P-256 point and a 16-byte secret in base64url")
	BadBatch         = newError(400, "bad_batch", "a batch needs 1 to the maximum number of pushes")
	BadChannelConfig = newError(400, "bad_channel_config", "the channel settings are invalid")
	ChannelNotFound  = newError(404, "channel_not_configured", "the app has no settings for this channel")
	// ChannelUnreadable: the stored settings do not open with this
	// server's secret key (it changed, or differs between nodes).
	ChannelUnreadable = newError(500, "channel_unreadable", "the stored channel settings do not open with this server's secret key")
	Unauthorized      = newError(401, "unauthorized", "missing or wrong credentials")
	NotFound          = newError(404, "not_found", "no such resource")
	DeviceNotFound    = newError(404, "device_not_found", "no such device in this app")
	MessageNotFound   = newError(404, "message_not_found", "no such message in this app")
	AppNotFound       = newError(404, "app_not_found", "no such app")
	MethodNotAllowed  = newError(405, "method_not_allowed", "method not allowed on this path")
	RequestTimeout    = newError(408, "request_timeout", "the request body did not arrive in time")
	AppExists         = newError(409, "app_exists", "an app with that name exists")
	UnsupportedMedia  = newError(415, "unsupported_media_type", "send application/json")
	RateLimited       = newError(429, "rate_limited", "too many requests; retry later")
	Internal          = newError(500, "internal", "internal error")
	// BackupUnsupported: the node's store is PostgreSQL, which its own
	// tools back up.
	BackupUnsupported = newError(501, "backup_unsupported", "this node stores everything in PostgreSQL: back it up with pg_dump or the database's own tools")
	Unavailable       = newError(503, "unavailable", "the server is shutting down or not ready")
	// StoreUnavailable: the store cannot make a change durable now (its
	// disk is full or read-only, its directory is gone). The change may
	// or may not have been stored; retry later, with an idempotency key
	// where the call takes one.
	StoreUnavailable = newError(503, "store_unavailable", "the server cannot store anything now; retry later")
	// TooManyConnections is answered at accept, before net/http sees the
	// connection (see RawResponse).
	TooManyConnections = newError(503, "too_many_connections", "too many connections from this address; close some or retry later")

	// The push service (RFC 8030 endpoints, /wpush/ and /v1/webpush/).
	MissingTTL           = newError(400, "missing_ttl", "a push to a Web Push endpoint needs a TTL header")
	BadUrgency           = newError(400, "bad_urgency", "Urgency must be very-low, low, normal or high")
	BadTopic             = newError(400, "bad_topic", "Topic must be 1 to 32 characters of the base64url alphabet")
	BadHeader            = newError(400, "bad_header", "a request header is invalid")
	BadKey               = newError(400, "bad_application_server_key", "application_server_key must be a P-256 public key in uncompressed form, base64url")
	VAPIDRequired        = newError(401, "vapid_required", "this subscription takes only pushes with VAPID credentials: Authorization: vapid t=<JWT>, k=<key>")
	VAPIDInvalid         = newError(403, "vapid_invalid", "the VAPID credentials are invalid")
	SubscriptionNotFound = newError(404, "subscription_not_found", "no such push subscription")
	TooManySubscriptions = newError(409, "too_many_subscriptions", "the device has as many push subscriptions as it may have")
	SubscriptionGone     = newError(410, "subscription_gone", "the push subscription was revoked")
)

// unavailable is implemented by errors that mean a dependency cannot serve
// for now (store.ErrUnavailable): this package is a leaf and cannot name
// them, so it recognises them by this method.
type unavailable interface{ Unavailable() bool }

// isUnavailable reports whether err, or an error it wraps, says it is
// unavailable.
func isUnavailable(err error) bool {
	var u unavailable
	return errors.As(err, &u) && u.Unavailable()
}

// Write renders err as the JSON error body. Errors outside the catalogue
// are written as Internal, or as StoreUnavailable when they report
// Unavailable() true; their text is not shown to the client.
func Write(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = Internal
		if isUnavailable(err) {
			e = StoreUnavailable
		}
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="herald"`)
	}
	if e.Status == http.StatusTooManyRequests {
		secs := max(1, int64((e.RetryAfter+time.Second-1)/time.Second))
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	if e.Code == StoreUnavailable.Code {
		// A full disk takes an operator to clear: a client that retries
		// at once only adds load.
		w.Header().Set("Retry-After", "5")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(struct {
		Error *Error `json:"error"`
	}{e})
}

// RawResponse renders e as a whole HTTP/1.1 response that closes the
// connection, for a refusal written straight to a socket that net/http
// never gets (a connection over its address's cap).
func RawResponse(e *Error) []byte {
	body, _ := json.Marshal(struct {
		Error *Error `json:"error"`
	}{e})
	body = append(body, '\n')
	retry := ""
	if e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests {
		retry = "Retry-After: 1\r\n"
	}
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s",
		e.Status, http.StatusText(e.Status), len(body), retry, body)
}

// HandlerFunc is an HTTP handler that returns its error instead of writing
// it, so that every error is rendered the same way.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts f to http.Handler. Errors outside the catalogue are logged
// with the request, since the client sees only "internal".
func Handle(log *slog.Logger, f HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := f(w, r)
		if err == nil {
			return
		}
		// The route's pattern, never the path: a path may hold a
		// capability (/wpush/{token}) or a registration ID.
		var e *Error
		switch {
		case errors.As(err, &e) && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden):
			log.Info("auth failure", "method", r.Method, "route", r.Pattern, "code", e.Code, "remote", r.RemoteAddr)
		case errors.As(err, &e):
		case isUnavailable(err):
			// The store logs the fault once; a line per refused
			// request would bury it.
			log.Debug("request refused", "method", r.Method, "route", r.Pattern, "err", err)
		default:
			log.Error("request failed", "method", r.Method, "route", r.Pattern, "err", err)
		}
		Write(w, err)
	})
}

// ReadJSON decodes r's JSON body into v strictly (no unknown fields, no key
// twice in one object, nothing after the value), reading at most limit
// bytes. It returns catalogue errors.
func ReadJSON(r *http.Request, limit int64, v any) error {
	body, err := ReadBody(r, limit)
	if err != nil {
		return err
	}
	return DecodeJSON(body, v)
}

// DecodeJSON is ReadJSON for a body already read.
func DecodeJSON(body []byte, v any) error {
	err := strictjson.Decode(body, v)
	var dk *strictjson.DuplicateKeyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &dk):
		return DuplicateKey.With("%q appears twice in one object", dk.Key)
	case errors.Is(err, strictjson.ErrTrailingData):
		return BadJSON.With("data after the JSON value")
	}
	return BadJSON.With("%s", strings.TrimPrefix(err.Error(), "json: "))
}

// ReadBody reads at most limit bytes of r's body, which must be JSON if its
// type is given. curl's default type for -d (form-urlencoded) is let
// through: the body is still parsed as JSON, and a quick curl should work.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json") && mt != "application/x-www-form-urlencoded") {
			return nil, UnsupportedMedia
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, BodyTooLarge.With("the request body is over %d bytes", limit)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, RequestTimeout.With("the request body did not arrive within the server's body timeout")
	}
	if err != nil {
		return nil, BadJSON.With("reading the body: %v", err)
	}
	return body, nil
}

// WriteJSON writes v as a JSON response with status. It returns nil: once
// the status is sent, a failed write is the client's loss, not an API error.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
	return nil
}
