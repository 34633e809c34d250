package mutex

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// lease is the Lease of a Mutex. Its validity deadline is the start of the
// acquire (or of the last successful Extend) plus the TTL minus the drift
// allowance, on the monotonic clock. Err compares it with the clock; once
// Done was called, a timer also ends the lease when the deadline passes.
type lease struct {
	m     *Mutex
	keys  []string
	rkeys []string
	token string
	fence int64
	value string // "<token>:<fence>", the value stored under each key
	// seen is a moment no earlier than the grant: the release script uses
	// it to tell whether the server clock may not have passed the fence.
	seen time.Time

	mu       sync.Mutex
	deadline time.Time
	// done and timer are made by the first call of Done.
	done     chan struct{}
	timer    *time.Timer
	err      error // why the lease ended; nil while held
	unlocked bool  // Unlock succeeded or found the keys gone
	// unlocking counts Unlock calls in flight: an Extend that finds the
	// keys gone meanwhile says nothing about the lease.
	unlocking int

	// parts are the leases of the slot groups of a lease on keys of
	// several Cluster slots (see lockGroups), nil otherwise. Such a lease
	// has the token, fence and value of the group of its first key, and
	// no Redis keys of its own.
	parts []*lease
	// partLost is why a part was found no longer held by an Unlock that
	// failed on another part; partial tells that such an Unlock released
	// some parts and ended the lease.
	partLost error
	partial  bool
	// parent is the lease that this one is a part of, if any: a part's
	// Extend, which may run on its own (a FIFO handover confirms in the
	// background), moves the parent's deadline. Set under mu.
	parent *lease
}

var _ Lease = (*lease)(nil)

// newLease returns the lease granted by an attempt started at start.
func (m *Mutex) newLease(keys, rkeys []string, token, fenceStr string, fence int64, start time.Time) *lease {
	return m.newLeaseFor(keys, rkeys, token, fenceStr, fence, start, m.ttl, time.Now())
}

// newLeaseFor returns a lease whose keys were set to expire validity after
// a moment no earlier than start, and that was granted no later than seen.
// A lease whose validity has already run out is returned ended.
func (m *Mutex) newLeaseFor(keys, rkeys []string, token, fenceStr string, fence int64, start time.Time, validity time.Duration, seen time.Time) *lease {
	l := &lease{
		m:     m,
		keys:  keys,
		rkeys: rkeys,
		token: token,
		fence: fence,
		value: token + ":" + fenceStr,
		seen:  seen,
	}
	l.mu.Lock()
	l.deadline = start.Add(validity - driftFor(validity))
	l.expireLocked()
	l.mu.Unlock()
	return l
}

// young tells the release script whether the server clock may not have
// passed the lease's fence yet: only for a lease granted a couple of
// milliseconds ago.
func (l *lease) young() any {
	if time.Since(l.seen) < 2*time.Millisecond {
		return argYes
	}
	return argNo
}

// Script arguments "1" and "0", boxed once.
var argYes, argNo any = "1", "0"

func (l *lease) Keys() []string { return append([]string(nil), l.keys...) }
func (l *lease) Token() string  { return l.token }
func (l *lease) Fence() int64   { return l.fence }

// FenceOf returns the fence of the grant of key: Fence for a lease within
// one Cluster slot, the fence of key's slot group otherwise; 0 if the
// lease does not hold key.
func (l *lease) FenceOf(key string) int64 {
	if l.parts != nil {
		if p := partOf(l.parts, key); p != nil {
			return p.fence
		}
		return 0
	}
	if slices.Contains(l.keys, key) {
		return l.fence
	}
	return 0
}

func (l *lease) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done == nil {
		l.done = make(chan struct{})
		if l.err != nil {
			close(l.done)
			return l.done
		}
		l.expireLocked() // closes done if the validity ran out
		if l.err == nil {
			l.timer = time.AfterFunc(time.Until(l.deadline), l.expire)
		}
	}
	return l.done
}

// rearmLocked moves the expiry timer, if Done made one, to the deadline.
// l.mu must be held.
func (l *lease) rearmLocked() {
	if l.timer != nil {
		l.timer.Reset(time.Until(l.deadline))
	}
}

// Err reports the end of the lease. It compares the validity deadline with
// the clock itself, so it never reports a lease held past its deadline,
// even before the expiry timer has run.
func (l *lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked()
	return l.err
}

// Deadline returns the end of the lease's validity: the moment up to which
// it is sure to hold its keys unless it is extended.
func (l *lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

func (l *lease) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked()
}

// expireLocked ends the lease if its validity has run out. l.mu must be
// held.
func (l *lease) expireLocked() {
	if l.err == nil && !time.Now().Before(l.deadline) {
		l.endLocked(fmt.Errorf("%w: validity of the lease on %q ran out", ErrNotHeld, l.keys))
	}
}

// endLocked ends the lease with err. l.mu must be held.
func (l *lease) endLocked(err error) {
	if l.err != nil {
		return
	}
	l.err = err
	if l.timer != nil {
		l.timer.Stop()
	}
	if l.done != nil {
		close(l.done)
	}
}

// Extend resets the TTL of every key to the Mutex's TTL if the lease still
// holds them all. It returns an error wrapping ErrNotHeld, without a Redis
// call, once the lease has ended by expiry or loss; ErrReleased after Unlock;
// an error wrapping ErrNotHeld (and ends the lease) when another owner holds
// a key; and the Redis error, leaving the lease as it was, if Redis fails.
func (l *lease) Extend(ctx context.Context) error {
	if err := l.Err(); err != nil {
		return fmt.Errorf("extend: %w", err)
	}
	if l.parts != nil {
		return l.extendParts(ctx)
	}
	start := time.Now()
	if l.m.replicas > 0 {
		idx, err := l.extendReplicated(ctx)
		if errors.Is(err, ErrNotReplicated) {
			return l.lostToReplicas(err)
		}
		return l.extended(start, idx, err)
	}
	idx, err := l.m.runScript(ctx, extendScript, l.rkeys, l.value, l.m.ttlMS).Int64()
	return l.extended(start, idx, err)
}

// extended applies the outcome of the extend script started at start and
// then, if it succeeded, moves the deadline of the lease l is a part of.
func (l *lease) extended(start time.Time, idx int64, err error) error {
	if err = l.extendedPart(start, idx, err); err == nil {
		l.mu.Lock()
		parent := l.parent
		l.mu.Unlock()
		if parent != nil {
			parent.partExtended()
		}
	}
	return err
}

// partExtended moves the deadline of a lease over several slot groups to
// the first of its parts' deadlines, after one of them was extended.
func (l *lease) partExtended() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked()
	if l.err != nil {
		return
	}
	l.deadline = partsDeadline(l.parts)
	l.rearmLocked()
}

// extendedPart applies the outcome of the extend script started at start
// to l.
func (l *lease) extendedPart(start time.Time, idx int64, err error) error {
	if err != nil {
		return fmt.Errorf("extend: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if idx != 0 {
		err := fmt.Errorf("%w: %q is no longer held by this lease", ErrNotHeld, l.keys[idx-1])
		if l.unlocking == 0 && !l.unlocked {
			l.endLocked(err)
		}
		return fmt.Errorf("extend: %w", err)
	}
	l.expireLocked()
	if l.err != nil {
		// The validity ran out while the call was in flight.
		return fmt.Errorf("extend: %w", l.err)
	}
	l.deadline = start.Add(l.m.ttl - driftFor(l.m.ttl))
	l.rearmLocked()
	return nil
}

// Unlock releases the keys the lease still holds; keys taken by another
// owner are left alone. It returns nil when every key was released while the
// lease was valid, ErrReleased (without a Redis call) after an earlier
// Unlock, an error wrapping ErrNotHeld when the validity had run out or a key
// was no longer held, an error wrapping ErrClockStalled when the server's
// clock had not passed the lease's fence (the keys stay held), and the Redis
// error if Redis fails; after those two, Unlock may be called again.
//
// A release that the client sent again after losing the reply of the first
// send (go-redis retries by default) finds the keys gone, or taken by a
// waiter that the first send woke: when that reply still arrives within the
// lease's validity, the first send released them, and Unlock returns nil.
// go-redis also sends a request again after some error replies (READONLY,
// LOADING); if Redis lost the keys meanwhile, by a failover or a restart,
// that Unlock returns nil as well.
func (l *lease) Unlock(ctx context.Context) error {
	if l.parts != nil {
		return l.unlockParts(ctx)
	}
	l.mu.Lock()
	if l.unlocked {
		l.mu.Unlock()
		return fmt.Errorf("unlock: %w", ErrReleased)
	}
	l.unlocking++
	l.mu.Unlock()
	n, resent, err := l.m.mode.release(ctx, l)
	replied := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unlocking--
	if err != nil {
		return fmt.Errorf("unlock: %w", clockStalled(err, l.fence))
	}
	if l.unlocked {
		return fmt.Errorf("unlock: %w", ErrReleased)
	}
	l.unlocked = true
	if n != len(l.rkeys) && resent && replied.Before(l.deadline) {
		// Redis ran the first send before the deadline, when the keys
		// were still the lease's: that send released them.
		n = len(l.rkeys)
	}
	if n != len(l.rkeys) {
		l.expireLocked()
		l.endLocked(fmt.Errorf("%w: %d of %d keys were no longer held by this lease", ErrNotHeld, len(l.rkeys)-n, len(l.rkeys)))
		return fmt.Errorf("unlock: %w", l.err)
	}
	l.expireLocked()
	if l.err != nil {
		return fmt.Errorf("unlock: %w", l.err)
	}
	l.endLocked(ErrReleased)
	return nil
}
