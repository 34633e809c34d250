package election

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/distlock/distlock/mutex"
)

// Term is a leader's term: the lease of its name, extended in the
// background until Resign, and its leader record. It implements
// mutex.Lease, so it can be handed to code that takes a lease, such as
// mutex.RunLocked.
type Term struct {
	e       *Election
	name    string
	value   string
	lease   mutex.Lease
	fence   string // the lease's fence, in decimal
	since   time.Time
	renewal *mutex.Renewal

	mu       sync.Mutex
	resigned bool
}

var (
	_ mutex.Lease        = (*Term)(nil)
	_ mutex.Unwrapper    = (*Term)(nil)
	_ mutex.AutoExtender = (*Term)(nil)
)

// Name returns the name the term leads.
func (t *Term) Name() string { return t.name }

// Value returns the value the leader campaigned with.
func (t *Term) Value() string { return t.value }

// Fence returns the term number: the Fence of its lease, greater than the
// fence of every earlier term of the name. Pass it to the storage the
// leader writes to, so that a deposed leader's writes can be refused.
func (t *Term) Fence() int64 { return t.lease.Fence() }

// Leader returns the term as a Leader.
func (t *Term) Leader() Leader {
	return Leader{Value: t.value, Fence: t.lease.Fence(), Since: t.since}
}

// Done is closed when the term ends: resigned, or its lease lost or run
// out. The leader must stop acting as one.
func (t *Term) Done() <-chan struct{} { return t.lease.Done() }

// Err is nil while the term lasts, mutex.ErrReleased after Resign, and an
// error wrapping mutex.ErrNotHeld once the lease was lost.
func (t *Term) Err() error { return t.lease.Err() }

// Keys returns the name, the one key of the term's lease.
func (t *Term) Keys() []string { return t.lease.Keys() }

// Token returns the owner token of the term's lease.
func (t *Term) Token() string { return t.lease.Token() }

// FenceOf returns the fence of the term's lease for key.
func (t *Term) FenceOf(key string) int64 { return t.lease.FenceOf(key) }

// Unwrap returns the term's lease.
func (t *Term) Unwrap() mutex.Lease { return t.lease }

// AutoExtended reports true: the term is extended in the background.
func (t *Term) AutoExtended() bool { return true }

// recordTTL is how long the leader record lasts from now: as long as the
// lease's keys, by its validity deadline, or the Election's TTL.
func (t *Term) recordTTL() string {
	d := t.e.ttl
	if dl, ok := mutex.Deadline(t.lease); ok {
		left := time.Until(dl)
		d = max(left+left/100+2*time.Millisecond, time.Millisecond)
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}

// Extend extends the term's lease and then its leader record, with the
// meaning of mutex.Lease's Extend. The background renewal calls it.
func (t *Term) Extend(ctx context.Context) error {
	if err := t.lease.Extend(ctx); err != nil {
		return err
	}
	err := refreshScript.Run(ctx, t.e.client, []string{t.e.recordKey(t.name)}, t.fence, t.recordTTL()).Err()
	if err != nil {
		return fmt.Errorf("extend: record: %w", err)
	}
	return nil
}

// Unlock resigns: see Resign.
func (t *Term) Unlock(ctx context.Context) error { return t.Resign(ctx) }

// Resign ends the term at once: it stops the renewals, deletes the leader
// record if it is still this term's, and releases the lease, so that a
// waiting candidate wins without waiting for a TTL. It returns the error
// of the lease's Unlock: mutex.ErrReleased after an earlier Resign, an
// error wrapping mutex.ErrNotHeld if the term was lost already, the Redis
// error if Redis fails (Resign may then be called again).
func (t *Term) Resign(ctx context.Context) error {
	t.mu.Lock()
	if t.renewal != nil {
		t.renewal.Stop()
	}
	t.resigned = true
	t.mu.Unlock()
	if err := resignScript.Run(ctx, t.e.client, []string{t.e.recordKey(t.name)}, t.fence).Err(); err != nil {
		return fmt.Errorf("resign: %w", err)
	}
	return t.lease.Unlock(ctx)
}
