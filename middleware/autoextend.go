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
	policy mutex.RenewPolicy
	sched  *Scheduler
	err    error // a bad option, reported by every Lock and TryLock
}

func (c *autoConfig) invalid(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: "+format, append([]any{mutex.ErrInvalid}, args...)...)
	}
}

// WithInterval renews each lease every d instead of each time a third of its
// validity has passed. d must be positive.
func WithInterval(d time.Duration) AutoExtendOption {
	return autoOptionFunc(func(c *autoConfig) {
		if d <= 0 {
			c.invalid("auto-extend interval %v, want > 0", d)
			return
		}
		c.policy.Interval = d
	})
}

// WithThreshold renews each lease when its remaining validity drops below d,
// like an automaticExtensionThreshold elsewhere. With WithInterval as well,
// whichever comes first applies. d must be positive, and large enough for a
// Redis round trip and a few retries.
func WithThreshold(d time.Duration) AutoExtendOption {
	return autoOptionFunc(func(c *autoConfig) {
		if d <= 0 {
			c.invalid("auto-extend threshold %v, want > 0", d)
			return
		}
		c.policy.Threshold = d
	})
}

// WithScheduler renews the leases with s instead of the process-wide
// Scheduler, mutex.DefaultRenewer. s must not be nil.
func WithScheduler(s *Scheduler) AutoExtendOption {
	return autoOptionFunc(func(c *autoConfig) {
		if s == nil {
			c.invalid("nil Scheduler for auto-extend")
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
// behind its decorators (see mutex.Deadline; the leases of a *mutex.Mutex
// have one); a lease without one is renewed every WithInterval, or every
// mutex.FallbackExtendInterval.
//
// A renewal that fails with a Redis error is retried with backoff until it
// succeeds or the lease's validity runs out. One that finds the keys held by
// another owner ends the lease at once. Either way, Done closes and Err
// wraps mutex.ErrNotHeld no later than the validity deadline, when the
// wrapped lease ends itself.
//
// Unlock stops the renewals and unlocks the wrapped lease with its context
// at once: it does not wait for a renewal in flight, which, if it reaches
// Redis after the keys were released, finds them gone and changes nothing.
// If that Unlock fails with a Redis error it may be called again, but the
// lease is no longer renewed.
//
// Renewals are made by a Scheduler: the process-wide mutex.DefaultRenewer,
// which mutex.RunLocked uses too, unless WithScheduler gives another. No
// goroutine runs per lease, and renewals that fall due together are made
// together. A renewal calls the wrapped lease's Extend, except that the
// leases of Mutexes sharing a Redis client are renewed in one pipeline.
//
// The leases implement mutex.AutoExtender, so mutex.RunLocked and WithLock
// do not extend them again (see mutex.IsAutoExtended), and mutex.Unwrapper.
// A lease that is already auto-extended (AutoExtend inside AutoExtend) is
// returned as it is. The context is passed on unchanged.
//
// Options that are out of range make every Lock and TryLock fail with an
// error wrapping mutex.ErrInvalid, before any Redis call. So does a closed
// Scheduler, with an error wrapping mutex.ErrClosed.
func AutoExtend(opts ...AutoExtendOption) Middleware {
	cfg := &autoConfig{sched: mutex.DefaultRenewer()}
	for _, o := range opts {
		if o == nil {
			cfg.invalid("nil option for auto-extend")
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
		return errNilAutoLocker
	}
	if err := x.cfg.sched.Err(); err != nil {
		return fmt.Errorf("auto-extend: %w", err)
	}
	return nil
}

var errNilAutoLocker = fmt.Errorf("%w: nil Locker for auto-extend", mutex.ErrInvalid)

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
		return mutex.Available, errNilAutoLocker
	}
	return x.next.Check(ctx, keys...)
}

func (x *autoLocker) wrap(ctx context.Context, l mutex.Lease) (mutex.Lease, error) {
	if mutex.IsAutoExtended(l) {
		return l, nil
	}
	r, err := x.cfg.sched.Renew(l, x.cfg.policy)
	if err != nil {
		// The Scheduler was closed meanwhile: give the keys back.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mutex.UnlockTimeout)
		defer cancel()
		_ = l.Unlock(uctx)
		return nil, fmt.Errorf("auto-extend: %w", err)
	}
	return &autoLease{r}, nil
}

// autoLease is a lease renewed by a Scheduler. Its end is the end of the
// wrapped lease, which closes Done by itself when its validity runs out or
// when an Extend finds its keys taken.
type autoLease struct {
	r *mutex.Renewal
}

var (
	_ mutex.Lease        = (*autoLease)(nil)
	_ mutex.Unwrapper    = (*autoLease)(nil)
	_ mutex.AutoExtender = (*autoLease)(nil)
)

func (a *autoLease) Keys() []string           { return a.r.Lease().Keys() }
func (a *autoLease) Token() string            { return a.r.Lease().Token() }
func (a *autoLease) Fence() int64             { return a.r.Lease().Fence() }
func (a *autoLease) FenceOf(key string) int64 { return a.r.Lease().FenceOf(key) }
func (a *autoLease) Done() <-chan struct{}    { return a.r.Lease().Done() }
func (a *autoLease) Err() error               { return a.r.Lease().Err() }

// Extend extends the lease now, besides the background renewals.
func (a *autoLease) Extend(ctx context.Context) error { return a.r.Lease().Extend(ctx) }

// Unlock stops the renewals and unlocks with ctx. It does not wait for a
// renewal in flight: one that reaches Redis after the keys were released
// finds them gone and changes nothing.
func (a *autoLease) Unlock(ctx context.Context) error {
	a.r.Stop()
	return a.r.Lease().Unlock(ctx)
}

// Unwrap returns the renewed lease.
func (a *autoLease) Unwrap() mutex.Lease { return a.r.Lease() }

// AutoExtended reports true.
func (a *autoLease) AutoExtended() bool { return true }
