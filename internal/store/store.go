// Package store is Herald's persistence contract. Two implementations pass
// the same behaviour suite (store/storetest): store/embedded, the default
// single-node store, and store/postgres, the system of record in cluster mode.
//
// Messages are stored once (ARCHITECTURE.md, decision 2). A message with
// explicit targets gets one small inbox entry per target device; a fan-out
// message (broadcast or tag selector) gets none: each device reads the app's
// fan-out messages that match it and are newer than its FirstSeq, minus those
// it has acknowledged. A broadcast therefore costs O(1) writes however many
// devices it reaches.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/heraldpush/herald/internal/push"
)

// Errors every store returns, so callers can tell cases apart with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	ErrClosed   = errors.New("store: closed")
	// ErrUnavailable is returned by a change the store cannot make durable
	// now: its disk is full or read-only, its directory is gone, or a
	// write is waiting for the disk. It is wrapped with the reason. Reads
	// may still work. A change that failed with it may or may not have
	// been stored (a write that was waiting can complete later), so it is
	// safe to retry only what is idempotent or carries an idempotency key.
	// Its value reports Unavailable() true, which the HTTP error catalogue
	// (a leaf that cannot import this package) renders as a 503.
	ErrUnavailable error = unavailableError{}
)

type unavailableError struct{}

func (unavailableError) Error() string     { return "store: unavailable" }
func (unavailableError) Unavailable() bool { return true }

// Store is everything Herald persists. Every method is safe for concurrent use.
//
// Ordering: Append assigns each message a Seq from one sequence per store.
// Pending returns a device's messages in Seq order. A store must never let a
// device skip a message because a message with a higher Seq became visible
// first (concurrent appends): whatever bookkeeping it keeps per device must
// account for late commits.
type Store interface {
	// CreateApp stores a new app. ErrExists if the key or the name is taken.
	CreateApp(ctx context.Context, app push.App) error
	// App returns the app with key. ErrNotFound if there is none.
	App(ctx context.Context, key string) (push.App, error)
	// AppByName returns the app named name. ErrNotFound if there is none.
	AppByName(ctx context.Context, name string) (push.App, error)

	// CreateDevice stores a new device, setting d.FirstSeq to the highest
	// Seq assigned so far, and returns it as stored. ErrExists if the ID is
	// taken; ErrNotFound if its app does not exist.
	CreateDevice(ctx context.Context, d push.Device) (push.Device, error)
	// Device returns the device with id. ErrNotFound if there is none.
	Device(ctx context.Context, id string) (push.Device, error)
	// Devices returns the devices with the given IDs, keyed by ID; an ID
	// with no device is left out, an ID given twice is read once. It is
	// Device for many IDs at once: a push to a thousand devices, or a
	// batch of pushes, looks its targets up in one read rather than one
	// per target (a round trip each to a database).
	Devices(ctx context.Context, ids []string) (map[string]push.Device, error)
	// UpdateDevice replaces the mutable fields of a stored device (Platform,
	// Alias, Tags, Channel, SecretHash, UpdatedAt). ErrNotFound if absent.
	UpdateDevice(ctx context.Context, d push.Device) error
	// DeleteDevice removes a device, its inbox and its acknowledgements.
	// ErrNotFound if absent.
	DeleteDevice(ctx context.Context, id string) error
	// DevicesByAlias returns the app's devices with alias, in ID order.
	DevicesByAlias(ctx context.Context, app, alias string) ([]push.Device, error)
	// EachDevice calls fn for every device of app, in no particular order,
	// until fn returns false.
	EachDevice(ctx context.Context, app string, fn func(*push.Device) bool) error

	// Append makes a batch of messages durable in one atomic write: when it
	// returns nil, every message and its inbox entries survive a crash
	// (fsync'd). It assigns each new message its Seq, increasing in batch
	// order. A message whose IdempotencyKey was already used in its app is
	// not stored again: its Accepted reports the earlier message's ID with
	// Duplicate set.
	//
	// Collapse: a new message with a CollapseID replaces older live messages
	// of the same kind and app with that CollapseID: for each explicit
	// target, the older inbox entry with that CollapseID is dropped (counted
	// as replaced in the older message's report); an older fan-out message
	// with that CollapseID is marked Replaced.
	Append(ctx context.Context, batch []Accept) ([]Accepted, error)
	// Message returns the message with id in app and its counters.
	// ErrNotFound if it does not exist in that app or has been purged.
	Message(ctx context.Context, app, id string) (push.Message, Counters, error)
	// Recall marks a message recalled so that no device receives it any
	// more. ErrNotFound if it does not exist in app.
	Recall(ctx context.Context, app, id string) error

	// Pending returns up to limit messages for device d that are live at now
	// (push.Message.Live): its inbox entries and the fan-out messages meant
	// for it (push.Message.For) that it has not acknowledged, in Seq order,
	// each message once. With maxBytes above zero it stops at the
	// message whose Size takes the messages' total to maxBytes or past
	// it, so that a poll of large messages loads no more than its answer
	// can hold and one message (which tells the poll that more wait).
	Pending(ctx context.Context, d *push.Device, now time.Time, limit, maxBytes int) ([]push.Message, error)
	// Ack records that device d received the messages with the given IDs:
	// they leave its inbox and count as delivered, once each. IDs that are
	// unknown, not for d, or already acknowledged are ignored. It returns
	// how many were newly acknowledged.
	Ack(ctx context.Context, d *push.Device, ids []string) (int, error)

	// Sweep deletes what can never be delivered any more: inbox entries and
	// acknowledgements of expired, recalled or replaced messages, and
	// messages whose ExpiresAt is older than now minus retain (reports are
	// kept that long after expiry), with their schedule entries (see Due).
	// It returns how many messages it purged.
	Sweep(ctx context.Context, now time.Time, retain time.Duration) (int, error)

	// Due returns up to limit scheduled messages that are due at now
	// (SendAt <= now) and not yet marked Fired, in due order (SendAt, then
	// Seq), and the SendAt of the earliest scheduled message it did not
	// return (zero when there is none): the caller looks again then, or at
	// once when that time has passed already (the page was full). It reads
	// no message bodies, so that a node can wait for thousands of scheduled
	// messages without holding them.
	//
	// A message is scheduled when its SendAt is after its AcceptedAt. Append
	// records it in the same atomic write as the message, so a restart
	// finds every scheduled message that was not fired. Recall and a
	// fan-out collapse that replaces it remove it; so does Sweep when it
	// purges the message. One that merely expired stays until fired or
	// purged: a message with a TTL of 0 expires the instant it is due and
	// is still for the devices connected then.
	//
	// Due and Fired serve one scheduler. Several nodes sharing a store
	// (cluster mode) would each fire every message: cluster mode must make
	// one node claim each, and these two methods are where that belongs.
	Due(ctx context.Context, now time.Time, limit int) (due []Scheduled, next time.Time, err error)
	// Fired records that the scheduled messages in due, as Due returned
	// them, were handed to live sessions, so that Due lists them no more.
	// Entries already gone (recalled, swept, fired) are ignored.
	Fired(ctx context.Context, due []Scheduled) error

	// CreateSubscription stores a new push subscription (a Web Push
	// endpoint that Herald hosts, RFC 8030). ErrExists if its token hash
	// is taken, or its ID among the device's subscriptions, live or
	// revoked; ErrNotFound if its device does not exist.
	CreateSubscription(ctx context.Context, sub Subscription) error
	// Subscription returns the subscription whose token hashes to
	// tokenHash, revoked or not. ErrNotFound if there is none (or it was
	// purged).
	Subscription(ctx context.Context, tokenHash []byte) (Subscription, error)
	// Subscriptions returns the device's live subscriptions in ID order.
	// Its cost follows the live ones only: however many the device
	// revoked, they are not read.
	Subscriptions(ctx context.Context, device string) ([]Subscription, error)
	// RevokeSubscription marks the device's subscription id revoked at at.
	// The record stays until PurgeSubscriptions, so that a push to it can
	// be told from a push to a token that never existed (410 Gone rather
	// than 404). Revoking it again keeps the first time. ErrNotFound if
	// the device has no subscription id.
	RevokeSubscription(ctx context.Context, device, id string, at time.Time) error
	// PurgeSubscriptions deletes the subscriptions revoked before before,
	// and returns how many. A push to one is then answered as to a token
	// that never existed.
	PurgeSubscriptions(ctx context.Context, before time.Time) (int, error)

	RelayStore
	Lister

	// Lead waits until this process holds the lease named name among all
	// the processes that share the store, and returns a channel that is
	// closed if it loses it (its connection to the store broke) and a
	// release function. It returns ctx's error if ctx ends first. Work that
	// must run on one node at a time (the relay queue) runs under it; an
	// embedded store, which one process holds, grants it at once.
	Lead(ctx context.Context, name string) (lost <-chan struct{}, release func(), err error)

	// InboxStats counts the inbox entries waiting (direct pushes not yet
	// acknowledged, replaced or swept) and the acceptance time of the
	// oldest, for the metrics. It reads every entry's key: call it at a
	// scrape's pace, not a push's.
	InboxStats(ctx context.Context) (InboxStats, error)

	// Ping reports whether the store answers reads now, for /readyz: a
	// read of something the store keeps in memory would not tell.
	Ping(ctx context.Context) error

	// Close releases the store. Other methods return ErrClosed afterwards.
	Close() error
}

// RelayStore is the durable part of relaying messages to the vendors'
// channels (APNs, FCM, Web Push): the jobs that wait for a send or a retry,
// what the vendors answered, the apps' channel credentials, and the
// deactivation of a device's channel the vendor says is gone.
//
// A relay job is written by Append in the same atomic write as its
// message (Accept.Relays), so a message accepted is never lost to its
// vendor: a job stays until RelayDone, across crashes and restarts.
//
// Devices: CreateDevice and UpdateDevice keep vendor addresses unique per
// app (push.Channel.Address): a device that registers a token or endpoint
// another device of its app holds takes it, and the other device's channel
// becomes Herald's own (ChannelHerald) in the same write.
type RelayStore interface {
	// RelayDue returns up to limit relay jobs due at now (Due <= now), in
	// due order, and the Due of the earliest job it did not return (zero
	// when there is none): the caller looks again then, or at once when
	// that has passed (the page was full). Jobs stay listed until
	// RelayRetry or RelayDone, so a caller with jobs in flight asks for
	// that many more and leaves them out.
	RelayDue(ctx context.Context, now time.Time, limit int) (due []RelayJob, next time.Time, err error)
	// RelayRetry reschedules job (as RelayDue returned it) for due, with
	// its Attempt and Channel as given. The first retry of a job counts it
	// as waiting in its message's report. Ignored if the job is gone.
	RelayRetry(ctx context.Context, job RelayJob, due time.Time) error
	// RelayDone removes the job of each end and counts its outcome in its
	// message's report (Counters.Relay), once: a job that is gone is
	// ignored. The ends are written together, so a relay that ends many
	// jobs a second writes them in batches. It need not be durable when it
	// returns: a crash may undo it, and the jobs are then sent again (at
	// least once), never lost.
	RelayDone(ctx context.Context, ends ...RelayEnd) error
	// RelayExpand adds jobs for devices found by expanding the fan-out
	// job from (Device empty); with last set it removes from in the same
	// write. A job that exists already is left as it is.
	RelayExpand(ctx context.Context, from RelayJob, jobs []RelayJob, last bool) error
	// Waits reports whether m still waits for d: an inbox entry when d is
	// an explicit target, or, for a fan-out message meant for d, no
	// acknowledgement. An own_first relay is skipped when it is false.
	Waits(ctx context.Context, d *push.Device, m *push.Message) (bool, error)
	// DeactivateChannel marks device id's channel inactive with reason at
	// at, if the channel is still ch (same kind and address): a vendor's
	// answer about an old token must not touch a newer one. It reports
	// whether it did. ErrNotFound if there is no such device.
	DeactivateChannel(ctx context.Context, id string, ch push.Channel, reason string, at time.Time) (bool, error)

	// PutChannelConfig stores app's settings for a vendor channel (kind:
	// "apns", "fcm", "webpush", or "delivery" for the app's channel
	// policy), sealed by the caller (credentials are encrypted before they
	// reach the store). ErrNotFound if the app does not exist.
	PutChannelConfig(ctx context.Context, app, kind string, sealed []byte) error
	// ChannelConfig returns what PutChannelConfig stored. ErrNotFound if
	// none.
	ChannelConfig(ctx context.Context, app, kind string) ([]byte, error)
	// DeleteChannelConfig removes it. ErrNotFound if none.
	DeleteChannelConfig(ctx context.Context, app, kind string) error
}

// RelayJob is one message due to one device's vendor channel, or, with
// Device empty, a fan-out message whose devices on vendor channels are
// still to be found (RelayExpand).
type RelayJob struct {
	Seq    uint64 // the message's
	MsgID  string // set by Append
	App    string // set by Append
	Device string
	// Channel is the vendor channel the job is for; set for a device's
	// job, empty for a fan-out job.
	Channel push.ChannelKind
	Due     time.Time
	Attempt int // sends made so far
	// Wait is, for a fan-out job, how long an own_first push waits for the
	// ack of a device that is online when the job is expanded before it is
	// relayed; negative for the app's default. Unused for a device's job.
	Wait time.Duration
}

// The results a relay job ends with (RelayOutcome.Result).
const (
	RelaySent   = "sent"   // the vendor accepted the message
	RelayFailed = "failed" // it was not sent, for Reason
	RelayGone   = "gone"   // the vendor said the token is gone; the channel was deactivated
	RelayOwn    = "own"    // not relayed: the device acknowledged on its own connection first
)

// InboxStats is what Store.InboxStats counts.
type InboxStats struct {
	Entries int64
	Oldest  time.Time // zero when Entries is 0
}

// RelayEnd is a relay job (as RelayDue returned it) and how it ended.
type RelayEnd struct {
	Job     RelayJob
	Outcome RelayOutcome
}

// RelayOutcome is how a relay job ended.
type RelayOutcome struct {
	Channel push.ChannelKind
	Result  string // RelaySent, RelayFailed, RelayGone or RelayOwn
	Reason  string // the vendor's reason or Herald's (expired, no_channel, ...); empty when sent
}

// RelayWaiting is the result under which a store counts the jobs waiting
// for a retry (RelayCounts.Waiting) beside the outcomes.
const RelayWaiting = "waiting"

// Add counts n jobs that ended with result and reason (or, for
// RelayWaiting, wait for a retry); any other result counts as failed for
// reason.
func (c *RelayCounts) Add(result, reason string, n int) {
	switch result {
	case RelaySent:
		c.Sent += n
	case RelayGone:
		c.Gone += n
	case RelayOwn:
		c.Own += n
	case RelayWaiting:
		c.Waiting += n
	default:
		if c.Failed == nil {
			c.Failed = map[string]int{}
		}
		c.Failed[reason] += n
	}
}

// RelayCounts are a message's relay outcomes on one channel.
type RelayCounts struct {
	Sent    int            `json:"sent"`
	Failed  map[string]int `json:"failed,omitempty"` // by reason
	Gone    int            `json:"gone"`
	Own     int            `json:"own,omitempty"`
	Waiting int            `json:"waiting"` // jobs waiting for a retry
}

// Subscription is a push subscription that Herald hosts (RFC 8030): the
// capability, which an application server holds as an endpoint URL, to send
// pushes to one device. The token in that URL is stored only as a hash, as
// secrets are.
type Subscription struct {
	ID        string // public handle for listing and revoking; not the token
	TokenHash []byte // SHA-256 of the token in the endpoint URL
	Device    string // registration ID
	App       string // the device's app key
	// AppServerKey is the application server's P-256 public key (a 65-byte
	// uncompressed point) whose VAPID signature (RFC 8292) every push must
	// carry; nil when pushes need none.
	AppServerKey []byte
	// Label is chosen by the device, to route a push to its consumer (a
	// service worker, Mozilla's channelID); Herald does not interpret it.
	Label     string
	CreatedAt time.Time
	RevokedAt time.Time // zero while the subscription is live
}

// Revoked reports whether the subscription was revoked.
func (s *Subscription) Revoked() bool { return !s.RevokedAt.IsZero() }

// Scheduled is what waking the devices of a scheduled message needs: who it
// is for and when, not its body.
type Scheduled struct {
	Seq    uint64
	ID     string
	App    string
	SendAt time.Time
	// Fanout is push.Message.Fanout: the app's devices that match the
	// message's selector get it, as well as Targets.
	Fanout bool
	// Targets are the explicit targets whose inbox entry still holds the
	// message (not replaced by a newer collapse, not deleted), in ID order.
	Targets []string
}

// Accept is one message to append.
type Accept struct {
	// Msg is the message; ID, App and the options are set, Seq is not.
	Msg *push.Message
	// Targets are the registration IDs that get an inbox entry: the
	// explicit audience, resolved and checked to belong to Msg.App.
	Targets []string
	// Relays are the message's relay jobs, stored with it; Seq, MsgID and
	// App are set by Append.
	Relays []RelayJob
}

// Accepted is the outcome of one Accept.
type Accepted struct {
	ID        string
	Seq       uint64
	Duplicate bool // an earlier message had the same idempotency key; ID is its ID
}

// Counters are a message's delivery counts.
type Counters struct {
	Targeted  int // inbox entries created for explicit targets
	Delivered int // acknowledgements, explicit and fan-out
	Replaced  int // inbox entries dropped by a newer message with the same collapse ID
	// Relay counts relay outcomes by channel; nil when there were none.
	Relay map[push.ChannelKind]*RelayCounts
}
