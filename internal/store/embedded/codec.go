package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/heraldpush/herald/internal/push"
)

// Records are a compact binary encoding rather than JSON: Pending decodes
// every message it considers, and JSON would both cost more and not give
// the bytes back exactly (it compacts raw JSON payloads). Each record starts
// with a version byte so that a later format can read an older one. The
// field order is the format: append new fields at the end, never reorder.
const recordV1 = 1

// recordV2 is a device or message record with the fields the relay added
// at its end (a device channel's Since and deactivation, a message's
// channel policy). A v1 record has none of them and reads as before.
const recordV2 = 2

var errCorrupt = errors.New("embedded: corrupt record")

// enc appends fields to a byte slice.
type enc []byte

func (e *enc) uvarint(v uint64) { *e = binary.AppendUvarint(*e, v) }
func (e *enc) varint(v int64)   { *e = binary.AppendVarint(*e, v) }
func (e *enc) str(s string)     { e.uvarint(uint64(len(s))); *e = append(*e, s...) }
func (e *enc) bytes(b []byte) {
	// nil and empty differ for raw JSON fields (absent vs. present), so
	// length+1 is written and 0 means nil.
	if b == nil {
		e.uvarint(0)
		return
	}
	e.uvarint(uint64(len(b)) + 1)
	*e = append(*e, b...)
}
func (e *enc) strs(l []string) {
	if l == nil {
		e.uvarint(0)
		return
	}
	e.uvarint(uint64(len(l)) + 1)
	for _, s := range l {
		e.str(s)
	}
}
func (e *enc) bool(b bool) {
	if b {
		*e = append(*e, 1)
	} else {
		*e = append(*e, 0)
	}
}

// time writes t as UTC nanoseconds; the zero time, which has no such
// representation, is written as the flag 0.
func (e *enc) time(t time.Time) {
	if t.IsZero() {
		e.bool(false)
		return
	}
	e.bool(true)
	e.varint(t.UnixNano())
}

// dec reads fields in the order enc wrote them. The first error sticks and
// later reads return zero values, so a decoder checks err once at the end.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *dec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) raw(n uint64) []byte {
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string { return string(d.raw(d.uvarint())) }

func (d *dec) bytes() []byte {
	n := d.uvarint()
	if n == 0 {
		return nil
	}
	return append([]byte{}, d.raw(n-1)...) // a copy: d.b belongs to the engine
}

func (d *dec) strs() []string {
	n := d.uvarint()
	if n == 0 {
		return nil
	}
	if n-1 > uint64(len(d.b)) { // each string takes at least one byte
		d.fail()
		return nil
	}
	l := make([]string, n-1)
	for i := range l {
		l[i] = d.str()
	}
	return l
}

func (d *dec) bool() bool {
	if len(d.b) == 0 || d.b[0] > 1 {
		d.fail()
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

func (d *dec) time() time.Time {
	if !d.bool() {
		return time.Time{}
	}
	return time.Unix(0, d.varint()).UTC()
}

func (d *dec) version() {
	d.versions(recordV1)
}

// versions reads the version byte, which may be any up to newest, and
// returns it (0 after an error).
func (d *dec) versions(newest byte) byte {
	if len(d.b) == 0 || d.b[0] < recordV1 || d.b[0] > newest {
		d.err = fmt.Errorf("%w: unknown record version", errCorrupt)
		d.b = nil
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func encodeApp(a *push.App) []byte {
	e := enc{recordV1}
	e.str(a.Key)
	e.str(a.Name)
	e.bytes(a.SecretHash)
	e.time(a.CreatedAt)
	return e
}

func decodeApp(b []byte) (push.App, error) {
	d := dec{b: b}
	d.version()
	a := push.App{Key: d.str(), Name: d.str(), SecretHash: d.bytes(), CreatedAt: d.time()}
	return a, d.err
}

func encodeDevice(v *push.Device) []byte {
	e := enc{recordV2}
	e.str(v.ID)
	e.str(v.App)
	e.str(string(v.Platform))
	e.str(v.Alias)
	e.strs(v.Tags)
	e.bytes(v.SecretHash)
	e.str(string(v.Channel.Kind))
	e.str(v.Channel.Token)
	e.bool(v.Channel.WebPush != nil)
	if w := v.Channel.WebPush; w != nil {
		e.str(w.Endpoint)
		e.str(w.P256DH)
		e.str(w.Auth)
	}
	e.time(v.CreatedAt)
	e.time(v.UpdatedAt)
	e.uvarint(v.FirstSeq)
	e.time(v.Channel.Since)
	e.str(v.Channel.Inactive)
	e.time(v.Channel.InactiveAt)
	return e
}

func decodeDevice(b []byte) (push.Device, error) {
	d := dec{b: b}
	ver := d.versions(recordV2)
	var v push.Device
	v.ID = d.str()
	v.App = d.str()
	v.Platform = push.Platform(d.str())
	v.Alias = d.str()
	v.Tags = d.strs()
	v.SecretHash = d.bytes()
	v.Channel.Kind = push.ChannelKind(d.str())
	v.Channel.Token = d.str()
	if d.bool() {
		v.Channel.WebPush = &push.WebPushSubscription{Endpoint: d.str(), P256DH: d.str(), Auth: d.str()}
	}
	v.CreatedAt = d.time()
	v.UpdatedAt = d.time()
	v.FirstSeq = d.uvarint()
	if ver >= recordV2 {
		v.Channel.Since = d.time()
		v.Channel.Inactive = d.str()
		v.Channel.InactiveAt = d.time()
	}
	return v, d.err
}

func encodeMessage(m *push.Message) []byte {
	e := make(enc, 0, 128+len(m.Data))
	e = append(e, recordV2)
	e.str(m.ID)
	e.str(m.App)
	e.uvarint(m.Seq)
	a := &m.Audience
	e.bool(a.All)
	e.strs(a.RegistrationIDs)
	e.strs(a.Aliases)
	e.strs(a.Tags)
	e.strs(a.TagAnd)
	e.strs(a.TagNot)
	ps := make([]string, len(m.Platforms))
	for i, p := range m.Platforms {
		ps[i] = string(p)
	}
	if m.Platforms == nil {
		ps = nil
	}
	e.strs(ps)
	e.bool(m.Notification != nil)
	if n := m.Notification; n != nil {
		e.str(n.Title)
		e.str(n.Body)
		e.bool(n.Badge != nil)
		if n.Badge != nil {
			e.varint(int64(*n.Badge))
		}
		e.str(n.Sound)
		e.bytes(n.Extras)
	}
	e.bytes(m.Data)
	e.varint(int64(m.TTL))
	e.str(string(m.Priority))
	e.str(m.CollapseID)
	e.str(m.IdempotencyKey)
	e.time(m.AcceptedAt)
	e.time(m.SendAt)
	e.time(m.ExpiresAt)
	e.bool(m.Recalled)
	e.bool(m.Replaced)
	e.str(string(m.Channel))
	return e
}

func decodeMessage(b []byte) (*push.Message, error) {
	d := dec{b: b}
	ver := d.versions(recordV2)
	m := &push.Message{ID: d.str(), App: d.str(), Seq: d.uvarint()}
	m.Audience = push.Audience{
		All: d.bool(), RegistrationIDs: d.strs(), Aliases: d.strs(),
		Tags: d.strs(), TagAnd: d.strs(), TagNot: d.strs(),
	}
	if ps := d.strs(); ps != nil {
		m.Platforms = make([]push.Platform, len(ps))
		for i, p := range ps {
			m.Platforms[i] = push.Platform(p)
		}
	}
	if d.bool() {
		n := &push.Notification{Title: d.str(), Body: d.str()}
		if d.bool() {
			v := d.varint()
			if v < math.MinInt32 || v > math.MaxInt32 {
				d.fail()
			}
			badge := int(v)
			n.Badge = &badge
		}
		n.Sound = d.str()
		n.Extras = d.bytes()
		m.Notification = n
	}
	m.Data = d.bytes()
	m.TTL = time.Duration(d.varint())
	m.Priority = push.Priority(d.str())
	m.CollapseID = d.str()
	m.IdempotencyKey = d.str()
	m.AcceptedAt = d.time()
	m.SendAt = d.time()
	m.ExpiresAt = d.time()
	m.Recalled = d.bool()
	m.Replaced = d.bool()
	if ver >= recordV2 {
		m.Channel = push.ChannelPolicy(d.str())
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// counters is the stored form of store.Counters.
type counters struct{ targeted, delivered, replaced uint64 }

func encodeCounters(c counters) []byte {
	var e enc
	e.uvarint(c.targeted)
	e.uvarint(c.delivered)
	e.uvarint(c.replaced)
	return e
}

func decodeCounters(b []byte) (counters, error) {
	d := dec{b: b}
	c := counters{d.uvarint(), d.uvarint(), d.uvarint()}
	return c, d.err
}

// encodeTargets and eachTarget store a message's explicit targets, which
// Recall and Sweep need to find its inbox entries.
func encodeTargets(ids []string) []byte {
	var e enc
	for _, id := range ids {
		e.str(id)
	}
	return e
}

func eachTarget(b []byte, fn func(id string)) error {
	d := dec{b: b}
	for len(d.b) > 0 && d.err == nil {
		fn(d.str())
	}
	return d.err
}
