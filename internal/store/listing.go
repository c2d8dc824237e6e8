package store

import (
	"context"

	"github.com/heraldpush/herald/internal/push"
)

// Lister is what the console and the provider API list: apps, an app's
// devices (by tag) and counts, and its recent messages. Each method reads
// an index made for it, so that a page costs its own length, not the
// app's size; CountDevices is the exception and walks the app's devices.
type Lister interface {
	// ListApps returns every app, in key order.
	ListApps(ctx context.Context) ([]push.App, error)
	// ListDevices returns up to q.Limit devices of app in ID order, those
	// with IDs after q.After when it is set, and only those carrying q.Tag
	// when it is set.
	ListDevices(ctx context.Context, app string, q DeviceQuery) ([]push.Device, error)
	// CountDevices counts app's devices by platform. It walks every
	// device of the app (an index of them, not their records where the
	// store can), so call it at a person's pace, not a push's.
	CountDevices(ctx context.Context, app string) (map[push.Platform]int, error)
	// ListMessages returns up to limit of app's messages that are not
	// purged, newest first (by Seq), with their counters: those older
	// than the message before when it is set.
	// ErrNotFound if before names no message of app (or a purged one).
	ListMessages(ctx context.Context, app, before string, limit int) ([]Listed, error)
}

// DeviceQuery selects a page of an app's devices (Lister.ListDevices).
type DeviceQuery struct {
	Tag   string // only devices with this tag; empty: all
	After string // only IDs after this one; empty: from the first
	Limit int    // at most this many; at least 1
}

// Listed is one message of Lister.ListMessages.
type Listed struct {
	Msg      push.Message
	Counters Counters
}
