// Package push is Herald's vocabulary: apps, devices, messages, audiences and
// the rules that make a push request valid. It does no I/O and imports nothing
// internal, so every other package can share its types.
package push

import (
	"encoding/json"
	"slices"
	"time"
)

// Platform is the kind of device a registration belongs to.
type Platform string

// The platforms a device may register as.
const (
	Android Platform = "android"
	IOS     Platform = "ios"
	Web     Platform = "web"
	Other   Platform = "other"
)

// Valid reports whether p is one of the known platforms.
func (p Platform) Valid() bool {
	switch p {
	case Android, IOS, Web, Other:
		return true
	}
	return false
}

// App is a tenant. Apps never see each other's devices or messages.
type App struct {
	Key        string    // public; devices register with it
	Name       string    // unique
	SecretHash []byte    // HashSecret of the master secret; the secret itself is never stored
	CreatedAt  time.Time // UTC
}

// ChannelKind says how a device is reached.
type ChannelKind string

// The channels a device can be reached on.
const (
	ChannelHerald  ChannelKind = "herald" // Herald's own connection or polling
	ChannelAPNs    ChannelKind = "apns"
	ChannelFCM     ChannelKind = "fcm"
	ChannelWebPush ChannelKind = "webpush"
)

// WebPushSubscription is a browser's push subscription (the PushSubscription
// JSON a browser hands to its app server).
type WebPushSubscription struct {
	Endpoint string `json:"endpoint"`
	P256DH   string `json:"p256dh"`
	Auth     string `json:"auth"`
}

// Channel is where Herald sends a device's pushes besides its own
// connection: a vendor's channel (APNs, FCM, Web Push), or none (Kind
// ChannelHerald). A device may always connect to Herald as well.
type Channel struct {
	Kind    ChannelKind          `json:"kind"`
	Token   string               `json:"token,omitempty"`   // APNs device token or FCM registration token
	WebPush *WebPushSubscription `json:"webpush,omitempty"` // set when Kind is ChannelWebPush
	// Since is when the device registered this token or subscription.
	Since time.Time `json:"since,omitzero"`
	// Inactive is why the vendor's channel is no longer tried (the vendor
	// said the token is gone), empty while it is active; InactiveAt is
	// when that was learnt.
	Inactive   string    `json:"inactive,omitempty"`
	InactiveAt time.Time `json:"inactive_at,omitzero"`
}

// Vendor reports whether c is an active vendor channel: one a message can
// be relayed to.
func (c *Channel) Vendor() bool {
	return c.Kind != "" && c.Kind != ChannelHerald && c.Inactive == ""
}

// Address is what identifies c at its vendor: the token, or the Web Push
// endpoint; empty for Herald's own channel. Two devices of an app never
// share one.
func (c *Channel) Address() string {
	if c.WebPush != nil {
		return c.WebPush.Endpoint
	}
	return c.Token
}

// SameAddress reports whether c and o are the same vendor channel (kind and
// address), whatever their state.
func (c *Channel) SameAddress(o *Channel) bool {
	return c.Kind == o.Kind && c.Address() == o.Address()
}

// ChannelPolicy says which of a device's channels a message takes: its own
// Herald connection, its vendor's channel, or both in turn.
type ChannelPolicy string

// The channel policies.
const (
	// OwnFirst (the default) delivers on the device's own connection when
	// it has a live one, and through its vendor's channel when it has none
	// or has not acknowledged within the relay delay.
	OwnFirst ChannelPolicy = "own_first"
	// VendorFirst relays at once and keeps the message for the device's
	// own connection too; clients drop the second copy by its id.
	VendorFirst ChannelPolicy = "vendor_first"
	// OwnOnly never relays.
	OwnOnly ChannelPolicy = "own_only"
	// VendorOnly relays to devices with an active vendor channel and does
	// not keep the message for their own connection; devices without one
	// get it on their own connection.
	VendorOnly ChannelPolicy = "vendor_only"
)

// Valid reports whether p is a known policy; empty means the app's default.
func (p ChannelPolicy) Valid() bool {
	switch p {
	case "", OwnFirst, VendorFirst, OwnOnly, VendorOnly:
		return true
	}
	return false
}

// Device is one registration.
type Device struct {
	ID         string   // registration_id
	App        string   // app key
	Platform   Platform //
	Alias      string   // optional; several devices may share one
	Tags       []string // sorted, unique
	SecretHash []byte   // HashSecret of the device secret
	Channel    Channel
	CreatedAt  time.Time
	UpdatedAt  time.Time

	// FirstSeq is the store's message sequence when the device registered:
	// fan-out messages at or below it were accepted before the device
	// existed and are not for it. Set by the store on creation.
	FirstSeq uint64
}

// HasTag reports whether the device carries tag t.
func (d *Device) HasTag(t string) bool {
	_, ok := slices.BinarySearch(d.Tags, t)
	return ok
}

// Priority is how urgently a message should reach the device.
type Priority string

// The message priorities.
const (
	PriorityNormal Priority = "normal"
	PriorityHigh   Priority = "high"
)

// Notification is what the device's system shows.
type Notification struct {
	Title  string          `json:"title,omitempty"`
	Body   string          `json:"body,omitempty"`
	Badge  *int            `json:"badge,omitempty"`
	Sound  string          `json:"sound,omitempty"`
	Extras json.RawMessage `json:"extras,omitempty"`
}

// Message is one accepted push. It is stored once, however many devices it
// targets (ARCHITECTURE.md, decision 2).
type Message struct {
	ID  string
	App string
	// Seq is the store's total order of acceptance, assigned when the
	// message is made durable. Per device, messages are delivered in Seq
	// order.
	Seq uint64

	Audience     Audience
	Platforms    []Platform // empty: every platform
	Notification *Notification
	Data         json.RawMessage // the pass-through "message"; nil when absent

	TTL            time.Duration
	Priority       Priority
	CollapseID     string
	IdempotencyKey string

	AcceptedAt time.Time
	SendAt     time.Time // not delivered before; equals AcceptedAt when not scheduled
	ExpiresAt  time.Time // SendAt + TTL

	// Channel is the push's channel policy; empty for the app's default.
	// RelayAfter is how long an own_first push waits for the device's ack
	// before it is relayed; nil for the app's default. Only Channel is
	// stored: the relay jobs are due when Append writes them.
	Channel    ChannelPolicy
	RelayAfter *time.Duration

	// Recalled is set once the provider recalls the message.
	Recalled bool
	// Replaced is set when a newer fan-out message with the same
	// CollapseID superseded this one before it expired.
	Replaced bool
}

// Expired reports whether m may no longer be delivered at now.
func (m *Message) Expired(now time.Time) bool { return !now.Before(m.ExpiresAt) }

// Due reports whether a scheduled message may be delivered at now.
func (m *Message) Due(now time.Time) bool { return !now.Before(m.SendAt) }

// Size is about how many bytes m takes on the wire to a device: its
// payload (message and notification) plus a fixed allowance for its ID,
// times and keys. It bounds how much one poll loads and answers; it is
// computed without encoding anything.
func (m *Message) Size() int {
	n := 160 + len(m.ID) + len(m.CollapseID) + len(m.Data)
	if nt := m.Notification; nt != nil {
		n += 64 + len(nt.Title) + len(nt.Body) + len(nt.Sound) + len(nt.Extras)
	}
	return n
}

// Live reports whether a device may be handed m at now.
func (m *Message) Live(now time.Time) bool {
	return !m.Recalled && !m.Replaced && m.Due(now) && !m.Expired(now)
}

// ForPlatform reports whether m's platform filter lets it reach p.
func (m *Message) ForPlatform(p Platform) bool {
	return len(m.Platforms) == 0 || slices.Contains(m.Platforms, p)
}

// ForOwn reports whether a fan-out message is for device d on its own
// connection: For, unless m is relayed only (VendorOnly) and d has an
// active vendor channel.
func (m *Message) ForOwn(d *Device) bool {
	return m.For(d) && !(m.Channel == VendorOnly && d.Channel.Vendor())
}

// Fanout reports whether m is delivered by fan-out on read: stored once and
// matched against each device as it reads (broadcast and tag audiences).
func (m *Message) Fanout() bool { return m.Audience.Selects() }

// For reports whether a fan-out message is meant for device d: the device
// belongs to the app, registered before the message, passes the platform
// filter and matches the audience's selector.
func (m *Message) For(d *Device) bool {
	return d.App == m.App && m.Seq > d.FirstSeq && m.ForPlatform(d.Platform) && m.Audience.Matches(d)
}
