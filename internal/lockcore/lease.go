package lockcore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/distlock/distlock/mutex"
)

// lease is a lease of a Core. Its validity deadline is the start of the
// acquire (or of the last successful Extend) plus the TTL minus the drift
// allowance, on the monotonic clock; a timer ends the lease when it passes.
type lease struct {
	c     *Core
	keys  []string
	rkeys []string
	token string
	fence int64

	mu       sync.Mutex
	timer    *time.Timer
	deadline time.Time
	done     chan struct{}
	err      error // why the lease ended; nil while held
	unlocked bool  // Unlock succeeded or found the keys gone
	// unlocking counts Unlock calls in flight: an Extend that finds the
	// keys gone meanwhile says nothing about the lease.
	unlocking int
}

var (
	_ mutex.Lease     = (*lease)(nil)
	_ mutex.Deadliner = (*lease)(nil)
)

// drift is the clock drift allowance for keys set to expire after ttl:
// 1% of it plus 2ms for the granularity of Redis expiry, as in package
// mutex.
func drift(ttl time.Duration) time.Duration {
	return ttl/100 + 2*time.Millisecond
}

// newLease returns the lease granted with fence by an attempt started at
// start. A grant whose validity ran out before its reply arrived is
// released in the background, and newLease returns nil.
func (c *Core) newLease(keys, rkeys []string, token, fenceStr string, start time.Time) (*lease, error) {
	fence, err := strconv.ParseInt(fenceStr, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bad fence %q", fenceStr)
	}
	l := &lease{
		c:        c,
		keys:     slices.Clone(keys),
		rkeys:    rkeys,
		token:    token,
		fence:    fence,
		done:     make(chan struct{}),
		deadline: start.Add(c.ttl - drift(c.ttl)),
	}
	l.mu.Lock()
	l.timer = time.AfterFunc(time.Until(l.deadline), l.expire)
	l.expireLocked()
	late := l.err != nil
	l.mu.Unlock()
	if late {
		c.leaveInBackground(rkeys, token)
		return nil, nil
	}
	return l, nil
}

func (l *lease) Keys() []string        { return slices.Clone(l.keys) }
func (l *lease) Token() string         { return l.token }
func (l *lease) Fence() int64          { return l.fence }
func (l *lease) Done() <-chan struct{} { return l.done }

// FenceOf returns the fence of the lease for key, the same for every key
// it holds, or 0 for a key it does not hold.
func (l *lease) FenceOf(key string) int64 {
	if slices.Contains(l.keys, key) {
		return l.fence
	}
	return 0
}

// Err reports the end of the lease. It compares the validity deadline with
// the clock itself, so it never reports a lease held past its deadline.
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

func (l *lease) expireLocked() {
	if l.err == nil && !time.Now().Before(l.deadline) {
		l.endLocked(fmt.Errorf("%w: validity of the lease on %q ran out", mutex.ErrNotHeld, l.keys))
	}
}

func (l *lease) endLocked(err error) {
	if l.err != nil {
		return
	}
	l.err = err
	l.timer.Stop()
	close(l.done)
}

// Extend resets the TTL of the lease on every key if it still holds them
// all. It returns an error wrapping mutex.ErrNotHeld, without a Redis
// call, once the lease has ended by expiry or loss; mutex.ErrReleased
// after Unlock; an error wrapping mutex.ErrNotHeld (and ends the lease)
// when it no longer holds a key; and the Redis error, leaving the lease as
// it was, if Redis fails.
func (l *lease) Extend(ctx context.Context) error {
	if err := l.Err(); err != nil {
		return fmt.Errorf("extend: %w", err)
	}
	start := time.Now()
	idx, err := extendScript.Run(ctx, l.c.client, resourceKeys(l.rkeys), l.token, l.c.ttlMS).Int()
	if err != nil {
		return fmt.Errorf("extend: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if idx != 0 {
		err := fmt.Errorf("%w: %q is no longer held by this lease", mutex.ErrNotHeld, l.keys[min(idx, len(l.keys))-1])
		if l.unlocking == 0 && !l.unlocked {
			l.endLocked(err)
		}
		return fmt.Errorf("extend: %w", err)
	}
	l.expireLocked()
	if l.err != nil {
		return fmt.Errorf("extend: %w", l.err)
	}
	l.deadline = start.Add(l.c.ttl - drift(l.c.ttl))
	l.timer.Reset(time.Until(l.deadline))
	return nil
}

// Unlock releases the keys the lease still holds. It returns nil when
// every key was released while the lease was valid, mutex.ErrReleased
// (without a Redis call) after an earlier Unlock, an error wrapping
// mutex.ErrNotHeld when the validity had run out or a key was no longer
// held, and the Redis error if Redis fails, in which case Unlock may be
// called again. A release that go-redis sent again after losing the reply
// of the first send finds the keys gone: when that reply still arrives
// within the lease's validity, the first send released them, and Unlock
// returns nil.
func (l *lease) Unlock(ctx context.Context) error {
	l.mu.Lock()
	if l.unlocked {
		l.mu.Unlock()
		return fmt.Errorf("unlock: %w", mutex.ErrReleased)
	}
	l.unlocking++
	l.mu.Unlock()
	cmd, sends := run(ctx, l.c.client, releaseScript, resourceKeys(l.rkeys), l.token, l.c.mode, l.c.wakeBase, l.c.plainFlag())
	n, err := cmd.Int()
	replied := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unlocking--
	if err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	if l.unlocked {
		return fmt.Errorf("unlock: %w", mutex.ErrReleased)
	}
	l.unlocked = true
	if n != len(l.rkeys) && sends > 1 && replied.Before(l.deadline) {
		n = len(l.rkeys)
	}
	l.expireLocked()
	if n != len(l.rkeys) {
		l.endLocked(fmt.Errorf("%w: %d of %d keys were no longer held by this lease", mutex.ErrNotHeld, len(l.rkeys)-n, len(l.rkeys)))
		return fmt.Errorf("unlock: %w", l.err)
	}
	if l.err != nil {
		return fmt.Errorf("unlock: %w", l.err)
	}
	l.endLocked(mutex.ErrReleased)
	return nil
}
