package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/distlock/distlock/mutex"
)

// AutoExtendOption configures AutoExtend.
type AutoExtendOption interface {
	applyAuto(*autoConfig)
}

type autoOptionFunc func(*autoConfig)

func (f autoOptionFunc) applyAuto(c *autoConfig) { f(c) }

type autoConfig struct {
	interval  time.Duration
	threshold time.Duration
	sched     *Scheduler
	err       error // a bad option, reported by every Lock and TryLock
}

func (c *autoConfig) invalid(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("middleware: auto-extend: %w: "+format, append([]any{mutex.ErrInvalid}, args...)...)
	}
}

// fallbackInterval is the renewal interval of a lease whose validity
// deadline is unknown.
func (c *autoConfig) fallbackInterval() time.Duration {
	if c.interval > 0 {
		return c.interval
	}
	return mutex.FallbackExtendInterval
}

// WithInterval renews each lease every d instead of each time a third of its
// validity has passed. d must be positive.
func WithInterval(d time.Duration) AutoExtendOption {
	return autoOptionFunc(func(c *autoConfig) {
		if d <= 0 {
			c.invalid("interval %v, want > 0", d)
			return
		}
		c.interval = d
	})
}

// WithThreshold renews each lease when its remaining validity drops below d,
// like an automaticExtensionThreshold elsewhere. With WithInterval as well,
// whichever comes first applies. d must be positive, and large enough for a
// Redis round trip and a few retries.
func WithThreshold(d time.Duration) AutoExtendOption {
	return autoOptionFunc(func(c *autoConfig) {
		if d <= 0 {
			c.invalid("threshold %v, want > 0", d)
			return
		}
		c.threshold = d
	})
}

// WithScheduler renews the leases with s instead of the process-wide
// Scheduler. s must not be nil.
func WithScheduler(s *Scheduler) AutoExtendOption {
	return autoOptionFunc(func(c *autoConfig) {
		if s == nil {
			c.invalid("nil scheduler")
			return
		}
		c.sched = s
	})
}

// AutoExtend returns a Middleware whose leases are extended in the
// background until they are unlocked or lost.
//
// By default a lease is renewed each time a third of its validity has
// passed (every TTL/3); WithInterval and WithThreshold change that. A
// renewal never comes sooner than a tenth of the validity after the last
// one, nor later than a tenth of it before the deadline, whatever the
// options say, so that a bad setting neither floods Redis nor lets a lease
// lapse. Validity comes from the lease's Deadline method, or that of a lease
// behind its decorators (the leases of a *mutex.Mutex have one); a lease
// without one is renewed every WithInterval, or every
// mutex.FallbackExtendInterval.
//
// A renewal that fails with a Redis error is retried with backoff until it
// succeeds or the lease's validity runs out. One that finds the keys held by
// another owner ends the lease at once. Either way, Done closes and Err
// wraps mutex.ErrNotHeld no later than the validity deadline, when the
// wrapped lease ends itself. Unlock stops the renewal, waits for a renewal
// in flight, then unlocks. If that Unlock fails with a Redis error it may be
// called again, but the lease is no longer renewed.
//
// Renewals are made by a Scheduler, the process-wide one unless
// WithScheduler gives another: no goroutine runs per lease, and renewals
// that fall due together go to Redis in one pipeline.
//
// The leases implement mutex.AutoExtender, so mutex.RunLocked and WithLock
// do not extend them again, and mutex.Unwrapper. A lease that is already
// auto-extended (AutoExtend inside AutoExtend) is returned as it is. The
// context is passed on unchanged.
//
// Options that are out of range make every Lock and TryLock fail with an
// error wrapping mutex.ErrInvalid, before any Redis call.
func AutoExtend(opts ...AutoExtendOption) Middleware {
	cfg := &autoConfig{sched: defaultScheduler}
	for _, o := range opts {
		if o == nil {
			cfg.invalid("nil option")
			continue
		}
		o.applyAuto(cfg)
	}
	return func(next mutex.Locker) mutex.Locker {
		return &autoLocker{next: next, cfg: cfg}
	}
}

type autoLocker struct {
	next mutex.Locker
	cfg  *autoConfig
}

var _ mutex.Locker = (*autoLocker)(nil)

func (x *autoLocker) check() error {
	if x.cfg.err != nil {
		return x.cfg.err
	}
	if x.next == nil {
		return fmt.Errorf("middleware: auto-extend: %w: nil Locker", mutex.ErrInvalid)
	}
	s := x.cfg.sched
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return s.errClosed()
	}
	return nil
}

// Lock locks through the wrapped Locker and renews the lease it returns.
func (x *autoLocker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	if err := x.check(); err != nil {
		return nil, err
	}
	l, err := x.next.Lock(ctx, keys...)
	if err != nil {
		return nil, err
	}
	return x.wrap(ctx, l)
}

// TryLock locks through the wrapped Locker and renews the lease it returns.
func (x *autoLocker) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	if err := x.check(); err != nil {
		return nil, err
	}
	l, err := x.next.TryLock(ctx, keys...)
	if err != nil {
		return nil, err
	}
	return x.wrap(ctx, l)
}

// Check calls the wrapped Check.
func (x *autoLocker) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	if x.next == nil {
		return mutex.Available, fmt.Errorf("middleware: auto-extend: %w: nil Locker", mutex.ErrInvalid)
	}
	return x.next.Check(ctx, keys...)
}

func (x *autoLocker) wrap(ctx context.Context, l mutex.Lease) (mutex.Lease, error) {
	if isAutoExtended(l) {
		return l, nil
	}
	a := &autoLease{inner: l, dl: findDeadliner(l), s: x.cfg.sched, cfg: x.cfg, index: -1}
	if err := a.s.add(a); err != nil {
		// The Scheduler was closed meanwhile: give the keys back.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mutex.UnlockTimeout)
		defer cancel()
		_ = l.Unlock(uctx)
		return nil, err
	}
	return a, nil
}

// autoLease is a lease renewed by a Scheduler. Its end is the end of the
// wrapped lease, which closes Done by itself when its validity runs out or
// when an Extend finds its keys taken.
type autoLease struct {
	inner mutex.Lease
	dl    deadliner // nil if the validity deadline is unknown
	s     *Scheduler
	cfg   *autoConfig

	// Guarded by s.mu.
	due      time.Time
	index    int // in s.heap, or -1
	failures int // failed renewals in a row
	inflight bool
	stopped  bool
	active   bool // counted in s.leases
}

var (
	_ mutex.Lease        = (*autoLease)(nil)
	_ mutex.Unwrapper    = (*autoLease)(nil)
	_ mutex.AutoExtender = (*autoLease)(nil)
)

func (a *autoLease) Keys() []string        { return a.inner.Keys() }
func (a *autoLease) Token() string         { return a.inner.Token() }
func (a *autoLease) Fence() int64          { return a.inner.Fence() }
func (a *autoLease) Done() <-chan struct{} { return a.inner.Done() }
func (a *autoLease) Err() error            { return a.inner.Err() }

// Extend extends the lease now, besides the background renewals.
func (a *autoLease) Extend(ctx context.Context) error { return a.inner.Extend(ctx) }

// Unlock stops the renewals, waits for one in flight, and unlocks.
func (a *autoLease) Unlock(ctx context.Context) error {
	a.s.remove(a)
	return a.inner.Unlock(ctx)
}

// Unwrap returns the renewed lease.
func (a *autoLease) Unwrap() mutex.Lease { return a.inner }

// AutoExtended reports true.
func (a *autoLease) AutoExtended() bool { return true }

// nextDue returns when to renew after a renewal (or the grant) at now.
func (a *autoLease) nextDue(now time.Time) time.Time {
	if a.dl == nil {
		return now.Add(a.cfg.fallbackInterval())
	}
	dl := a.dl.Deadline()
	v := dl.Sub(now)
	if v <= 0 {
		return now
	}
	due := now.Add(v / 3)
	if a.cfg.interval > 0 {
		due = now.Add(a.cfg.interval)
	}
	if a.cfg.threshold > 0 {
		if t := dl.Add(-a.cfg.threshold); a.cfg.interval == 0 || t.Before(due) {
			due = t
		}
	}
	if lo := now.Add(v / 10); due.Before(lo) {
		due = lo
	}
	if hi := dl.Add(-v / 10); due.After(hi) {
		due = hi
	}
	return due
}

// retryDue returns when to retry after a renewal failed at now: backing off
// from 10ms, never by more than a quarter of the remaining validity, and
// never after the deadline.
func (a *autoLease) retryDue(now time.Time) time.Time {
	b := retryBackoff
	b.Max = a.cfg.fallbackInterval() / 2
	var dl time.Time
	if a.dl != nil {
		dl = a.dl.Deadline()
		b.Max = dl.Sub(now) / 4
	}
	b.Max = max(b.Max, b.Min)
	due := now.Add(b.ForAttempt(float64(a.failures - 1)))
	if a.dl != nil && due.After(dl) {
		due = dl
	}
	return due
}

// deadliner is implemented by leases that know the end of their validity.
type deadliner interface {
	Deadline() time.Time
}

// findDeadliner returns l, or the first lease behind its decorators, that
// reports its validity deadline, or nil.
func findDeadliner(l mutex.Lease) deadliner {
	for l != nil {
		if d, ok := l.(deadliner); ok {
			return d
		}
		u, ok := l.(mutex.Unwrapper)
		if !ok {
			return nil
		}
		l = u.Unwrap()
	}
	return nil
}

// isAutoExtended reports whether l, or a lease behind its decorators, is
// renewed in the background.
func isAutoExtended(l mutex.Lease) bool {
	for l != nil {
		if a, ok := l.(mutex.AutoExtender); ok && a.AutoExtended() {
			return true
		}
		u, ok := l.(mutex.Unwrapper)
		if !ok {
			return false
		}
		l = u.Unwrap()
	}
	return false
}
