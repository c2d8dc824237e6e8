package nats

import (
	"encoding/json"
	"time"

	"github.com/heraldpush/herald/internal/push"
)

// What travels on the bus. Only this package reads it, and nodes of one
// cluster run the same version during a rolling upgrade only briefly; a
// node that cannot decode an envelope drops it, and the sessions it was
// for read their inboxes at the next Recheck.

// Kinds of envelope.
const (
	kindMessage  = "m" // Msg for Targets (on a device subject: that device)
	kindAcked    = "a" // IDs were acknowledged by the subject's device
	kindChanged  = "c" // Device is the subject's device's new snapshot
	kindDeleted  = "d" // the subject's device was deleted
	kindTakeOver = "t" // the subject's device attached an exclusive session at At
	kindPresence = "p" // is the subject's device online? (a request)
)

type envelope struct {
	Kind    string       `json:"k"`
	Node    string       `json:"n,omitempty"` // the sender, for logs
	Msg     *wireMessage `json:"m,omitempty"`
	Targets []string     `json:"t,omitempty"`
	IDs     []string     `json:"i,omitempty"`
	Device  *wireDevice  `json:"d,omitempty"`
	At      int64        `json:"at,omitempty"` // Unix ns
	Sent    int64        `json:"s,omitempty"`  // when it was published, Unix ns: herald_bus_lag_seconds
}

// wireMessage is push.Message with every field a session needs, named
// here rather than by push's own JSON tags (which describe the device
// wire, and leave out what a session must still match on, such as a
// broadcast's Audience.All).
type wireMessage struct {
	ID           string             `json:"id"`
	App          string             `json:"app"`
	Seq          uint64             `json:"seq"`
	All          bool               `json:"all,omitempty"`
	IDs          []string           `json:"ids,omitempty"`
	Aliases      []string           `json:"aliases,omitempty"`
	Tags         []string           `json:"tags,omitempty"`
	TagAnd       []string           `json:"tag_and,omitempty"`
	TagNot       []string           `json:"tag_not,omitempty"`
	Platforms    []push.Platform    `json:"platforms,omitempty"`
	Notification *push.Notification `json:"notification,omitempty"`
	Data         json.RawMessage    `json:"data,omitempty"`
	TTL          time.Duration      `json:"ttl"`
	Priority     push.Priority      `json:"priority,omitempty"`
	CollapseID   string             `json:"collapse_id,omitempty"`
	AcceptedAt   time.Time          `json:"accepted_at"`
	SendAt       time.Time          `json:"send_at"`
	ExpiresAt    time.Time          `json:"expires_at"`
	Channel      push.ChannelPolicy `json:"channel,omitempty"`
	Recalled     bool               `json:"recalled,omitempty"`
	Replaced     bool               `json:"replaced,omitempty"`
}

func toWire(m *push.Message) *wireMessage {
	a := &m.Audience
	return &wireMessage{
		ID: m.ID, App: m.App, Seq: m.Seq,
		All: a.All, IDs: a.RegistrationIDs, Aliases: a.Aliases, Tags: a.Tags, TagAnd: a.TagAnd, TagNot: a.TagNot,
		Platforms: m.Platforms, Notification: m.Notification, Data: m.Data,
		TTL: m.TTL, Priority: m.Priority, CollapseID: m.CollapseID,
		AcceptedAt: m.AcceptedAt, SendAt: m.SendAt, ExpiresAt: m.ExpiresAt,
		Channel: m.Channel, Recalled: m.Recalled, Replaced: m.Replaced,
	}
}

func (w *wireMessage) message() *push.Message {
	return &push.Message{
		ID: w.ID, App: w.App, Seq: w.Seq,
		Audience:  push.Audience{All: w.All, RegistrationIDs: w.IDs, Aliases: w.Aliases, Tags: w.Tags, TagAnd: w.TagAnd, TagNot: w.TagNot},
		Platforms: w.Platforms, Notification: w.Notification, Data: w.Data,
		TTL: w.TTL, Priority: w.Priority, CollapseID: w.CollapseID,
		AcceptedAt: w.AcceptedAt, SendAt: w.SendAt, ExpiresAt: w.ExpiresAt,
		Channel: w.Channel, Recalled: w.Recalled, Replaced: w.Replaced,
	}
}

// wireDevice is what the hub matches fan-out messages on.
type wireDevice struct {
	ID       string        `json:"id"`
	App      string        `json:"app"`
	Platform push.Platform `json:"platform"`
	Alias    string        `json:"alias,omitempty"`
	Tags     []string      `json:"tags,omitempty"`
	FirstSeq uint64        `json:"first_seq"`
}

func deviceToWire(d *push.Device) *wireDevice {
	return &wireDevice{ID: d.ID, App: d.App, Platform: d.Platform, Alias: d.Alias, Tags: d.Tags, FirstSeq: d.FirstSeq}
}

func (w *wireDevice) device() *push.Device {
	return &push.Device{ID: w.ID, App: w.App, Platform: w.Platform, Alias: w.Alias, Tags: w.Tags, FirstSeq: w.FirstSeq}
}
