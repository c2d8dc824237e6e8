package postgres

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLeadOneAtATime: of two stores on one schema, one holds a lease at a
// time; the other gets it once it is released, or once the holder's
// session ends. Another schema's lease of the same name is another lease.
func TestLeadOneAtATime(t *testing.T) {
	a, schema := openTest(t)
	b, err := Open(ctx, testURL(), WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	other, _ := openTest(t)

	lostA, releaseA, err := a.Lead(ctx, "relay")
	if err != nil {
		t.Fatal(err)
	}
	if _, release, err := other.Lead(ctx, "relay"); err != nil {
		t.Fatalf("another schema's lease: %v", err)
	} else {
		release()
	}
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, _, err := b.Lead(short, "relay"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b.Lead while a holds the lease = %v, want it to wait until its context ends", err)
	}
	got := make(chan func(), 1)
	go func() {
		_, release, err := b.Lead(ctx, "relay")
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- release
	}()
	select {
	case <-lostA:
		t.Fatal("a lost a lease it holds")
	default:
	}
	releaseA()
	select {
	case release := <-got:
		if release != nil {
			release()
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b did not get the lease after a released it")
	}
}
