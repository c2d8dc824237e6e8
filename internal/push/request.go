package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/internal/strictjson"
)

// Limits bound what a push request may ask for.
type Limits struct {
	MaxPayload int           // bytes of notification plus message JSON
	MaxIDs     int           // registration IDs plus aliases in one audience
	DefaultTTL time.Duration // when the request gives none
	MaxTTL     time.Duration
	MaxDelay   time.Duration // how far ahead send_at may be
}

// DefaultLimits are the limits PRODUCT.md promises.
func DefaultLimits() Limits {
	return Limits{
		MaxPayload: 4096,
		MaxIDs:     1000,
		DefaultTTL: 24 * time.Hour,
		MaxTTL:     30 * 24 * time.Hour,
		MaxDelay:   30 * 24 * time.Hour,
	}
}

// Request is the body of POST /v1/push.
type Request struct {
	Audience     *Audience       `json:"audience"`
	Platform     PlatformFilter  `json:"platform,omitempty"`
	Notification *Notification   `json:"notification,omitempty"`
	Message      json.RawMessage `json:"message,omitempty"`
	Options      Options         `json:"options"`
}

// Options are a push request's delivery options.
type Options struct {
	TTL            *int64     `json:"ttl,omitempty"` // seconds
	CollapseID     string     `json:"collapse_id,omitempty"`
	Priority       Priority   `json:"priority,omitempty"`
	SendAt         *time.Time `json:"send_at,omitempty"`
	IdempotencyKey string     `json:"idempotency_key,omitempty"`
	// Channel overrides the app's channel policy for this push.
	Channel ChannelPolicy `json:"channel,omitempty"`
	// RelayAfter (seconds) overrides how long an own_first push waits
	// for the device's ack on its own connection before it is relayed.
	RelayAfter *int64 `json:"relay_after,omitempty"`
}

// MaxRelayAfter bounds options.relay_after.
const MaxRelayAfter = 24 * time.Hour

// PlatformFilter is "all", one platform, or a list of them.
type PlatformFilter []Platform

// UnmarshalJSON accepts "all", "ios" or ["ios","android"].
func (f *PlatformFilter) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "all" {
			*f = nil
			return nil
		}
		b = []byte(`["` + s + `"]`)
		if !Platform(s).Valid() {
			return fmt.Errorf("%w: %q", ErrBadPlatform, s)
		}
	}
	var list []Platform
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("%w: platform must be \"all\", a platform or a list of them", ErrBadPlatform)
	}
	for _, p := range list {
		if !p.Valid() {
			return fmt.Errorf("%w: %q", ErrBadPlatform, p)
		}
	}
	*f = list
	return nil
}

// requestSchema is how DecodeRequest compares keys: case-insensitively in
// the request's own objects, as encoding/json matches them to fields, and
// exactly in the provider's data (message, extras).
var requestSchema = strictjson.SchemaOf(&Request{})

// DecodeRequest reads one push request strictly: unknown fields, trailing
// data and wrong types are errors wrapping ErrBadJSON or ErrBadAudience; a
// key named twice in one object (encoding/json would keep the last, so
// {"audience":{...},"audience":"all"} would be a broadcast) wraps
// ErrDuplicateKey.
func DecodeRequest(body []byte) (Request, error) {
	if err := strictjson.CheckKeys(body, requestSchema); err != nil {
		return Request{}, duplicateError(err)
	}
	var r Request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Request{}, fmt.Errorf("%w: data after the JSON object", ErrBadJSON)
	}
	return r, nil
}

func duplicateError(err error) error {
	var dk *strictjson.DuplicateKeyError
	if errors.As(err, &dk) {
		return fmt.Errorf("%w: %q appears twice in one object", ErrDuplicateKey, dk.Key)
	}
	return fmt.Errorf("%w: %v", ErrBadJSON, err)
}

func decodeError(err error) error {
	for _, sentinel := range []error{ErrBadAudience, ErrBadPlatform} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return fmt.Errorf("%w: %s must be of type %s", ErrBadJSON, typeErr.Field, typeErr.Type)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field") && strings.Contains(err.Error(), "audience") {
		return fmt.Errorf("%w: %v", ErrBadAudience, err)
	}
	return fmt.Errorf("%w: %v", ErrBadJSON, strings.TrimPrefix(err.Error(), "json: "))
}

// Build validates r against lim and builds the message it asks for. The
// caller sets ID and App; the store sets Seq.
func (r *Request) Build(now time.Time, lim Limits) (*Message, error) {
	if r.Audience == nil || r.Audience.Empty() {
		return nil, fmt.Errorf("%w: give \"all\" or at least one registration_id, alias or tag", ErrEmptyAudience)
	}
	a := r.Audience
	if n := len(a.RegistrationIDs) + len(a.Aliases); n > lim.MaxIDs {
		return nil, fmt.Errorf("%w: %d registration IDs and aliases, at most %d", ErrTooManyIDs, n, lim.MaxIDs)
	}
	for _, list := range [][]string{a.RegistrationIDs, a.Aliases, a.Tags, a.TagAnd, a.TagNot} {
		for _, s := range list {
			if err := ValidName(s); err != nil {
				return nil, err
			}
		}
	}
	if r.Notification == nil && len(r.Message) == 0 {
		return nil, ErrEmptyMessage
	}
	var data json.RawMessage
	if len(r.Message) > 0 && !bytes.Equal(r.Message, []byte("null")) {
		data = slices.Clone(r.Message)
	}
	if err := checkReserved(data); err != nil {
		return nil, err
	}
	size := len(data)
	if r.Notification != nil {
		n, _ := json.Marshal(r.Notification)
		size += len(n)
	}
	if size > lim.MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes of notification and message, at most %d", ErrPayloadTooLarge, size, lim.MaxPayload)
	}

	o := r.Options
	ttl := lim.DefaultTTL
	if o.TTL != nil {
		if *o.TTL < 0 {
			return nil, fmt.Errorf("%w: ttl must be 0 or more seconds, not %d", ErrBadTTL, *o.TTL)
		}
		// Compare in seconds first: a huge ttl would overflow a Duration.
		ttl = lim.MaxTTL
		if *o.TTL < int64(lim.MaxTTL/time.Second) {
			ttl = time.Duration(*o.TTL) * time.Second
		}
	}
	prio := o.Priority
	switch prio {
	case "":
		prio = PriorityNormal
	case PriorityNormal, PriorityHigh:
	default:
		return nil, fmt.Errorf("%w: priority must be \"normal\" or \"high\", not %q", ErrBadOption, prio)
	}
	if len(o.CollapseID) > 128 || !utf8.ValidString(o.CollapseID) {
		return nil, fmt.Errorf("%w: collapse_id must be valid UTF-8 of at most 128 bytes", ErrBadOption)
	}
	if len(o.IdempotencyKey) > 128 || !utf8.ValidString(o.IdempotencyKey) {
		return nil, fmt.Errorf("%w: idempotency_key must be valid UTF-8 of at most 128 bytes", ErrBadOption)
	}
	if !o.Channel.Valid() {
		return nil, fmt.Errorf("%w: channel must be own_first, vendor_first, own_only or vendor_only, not %q", ErrBadOption, o.Channel)
	}
	var relayAfter *time.Duration
	if o.RelayAfter != nil {
		if *o.RelayAfter < 0 || *o.RelayAfter > int64(MaxRelayAfter/time.Second) {
			return nil, fmt.Errorf("%w: relay_after must be 0 to %d seconds", ErrBadOption, int64(MaxRelayAfter/time.Second))
		}
		d := time.Duration(*o.RelayAfter) * time.Second
		relayAfter = &d
	}
	now = now.UTC()
	sendAt := now
	if o.SendAt != nil && o.SendAt.After(now) {
		if o.SendAt.Sub(now) > lim.MaxDelay {
			return nil, fmt.Errorf("%w: send_at is more than %s ahead", ErrBadOption, lim.MaxDelay)
		}
		sendAt = o.SendAt.UTC()
	}
	return &Message{
		Audience:       *a,
		Platforms:      r.Platform,
		Notification:   r.Notification,
		Data:           data,
		TTL:            ttl,
		Priority:       prio,
		CollapseID:     o.CollapseID,
		IdempotencyKey: o.IdempotencyKey,
		Channel:        o.Channel,
		RelayAfter:     relayAfter,
		AcceptedAt:     now,
		SendAt:         sendAt,
		ExpiresAt:      sendAt.Add(ttl),
	}, nil
}

// ValidName checks an alias, tag or registration ID: 1 to 128 bytes of
// printable UTF-8.
func ValidName(s string) error {
	if s == "" || len(s) > 128 || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %q must be 1 to 128 bytes of UTF-8", ErrBadTag, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %q has a control character", ErrBadTag, s)
		}
	}
	return nil
}

// NormalizeTags validates tags and returns them sorted and unique.
func NormalizeTags(tags []string, max int) ([]string, error) {
	if len(tags) > max {
		return nil, fmt.Errorf("%w: %d tags, at most %d", ErrBadTag, len(tags), max)
	}
	for _, t := range tags {
		if err := ValidName(t); err != nil {
			return nil, err
		}
	}
	out := slices.Clone(tags)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// WebPushKey is the top-level key of a message that came through one of
// Herald's Web Push endpoints (POST /wpush/{token}): the envelope a
// browser's push client (Firefox over /mozpush, the JS client) hands to
// the channel it names. Only the endpoint writes it, after checking that
// subscription's VAPID key; a provider's message carrying it could reach a
// site's service worker without that check, so Build refuses it.
const WebPushKey = "webpush"

// checkReserved refuses a message whose top level is an object with
// WebPushKey. The scan is cheap for the usual message, which does not
// mention the key at all.
func checkReserved(data json.RawMessage) error {
	if !bytes.Contains(data, []byte(`"`+WebPushKey+`"`)) {
		return nil
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil // not an object: it cannot hold the key
	}
	if _, ok := top[WebPushKey]; ok {
		return fmt.Errorf("%w: message.%s is written only by Herald's Web Push endpoints, which check the subscription's VAPID key: push to a browser through its subscription's endpoint (POST /wpush/{token})", ErrReservedKey, WebPushKey)
	}
	return nil
}
