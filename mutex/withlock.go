package mutex

import (
	"context"
	"errors"
	"fmt"
	"time"
)

const (
	// UnlockTimeout bounds the Unlock that WithLock and RunLocked make after
	// the function returns. That Unlock does not end with the caller's
	// context, so a cancelled request still releases its keys.
	UnlockTimeout = 5 * time.Second

	// FallbackExtendInterval is how often a Renewer, and so RunLocked,
	// extends a lease that reports no validity deadline, unless its
	// RenewPolicy sets an Interval.
	FallbackExtendInterval = time.Second
)

// WithLock runs fn while holding key. It is WithLockMany with one key.
func WithLock(ctx context.Context, l Locker, key string, fn func(ctx context.Context) error) error {
	return WithLockMany(ctx, l, []string{key}, fn)
}

// WithLockMany locks every key with l.Lock (waiting for them as long as ctx
// allows), runs fn with RunLocked and unlocks the keys afterwards, even if fn
// panics (the panic goes on after the unlock). The context given to fn is
// cancelled when the lease is lost, with a cause wrapping ErrNotHeld that
// context.Cause reports. WithLockMany returns fn's error joined with any
// unlock error, or the error of Lock, in which case fn did not run.
//
// l may be any Locker, decorated or not. A lease of l that is not already
// extended in the background (see IsAutoExtended) is extended by the
// process-wide Renewer while fn runs.
//
// Reentrancy: if ctx already holds every key through a lease of the same l
// (it runs under an outer WithLock, RunLocked, or the HTTP or gRPC
// middleware on that Locker), fn joins the held lease: it runs at once with
// ctx, and WithLockMany neither locks nor unlocks. If ctx holds only some of
// the keys, Lock fails with ErrReentrant rather than waiting for itself; the
// same holds for a direct Lock or TryLock of a held key.
//
// Bad input (nil l or fn, no keys) gives an error wrapping ErrInvalid before
// any Redis call.
func WithLockMany(ctx context.Context, l Locker, keys []string, fn func(ctx context.Context) error) error {
	return withLock(ctx, "WithLock", l, keys, fn, func() (Lease, error) {
		return l.Lock(ctx, keys...)
	})
}

// WithLockWait runs fn while holding key, like WithLock, but waits for the
// lock at most wait: it locks with l.Lock under a context derived from ctx
// that times out after wait (with one l.TryLock when wait is zero). That
// timeout bounds the wait only. fn runs with RunLocked under ctx itself,
// however long it takes: the lease is extended while fn runs, fn's context
// is cancelled if the lease is lost, and the key is unlocked when fn
// returns or panics.
//
// It is the "wait briefly, work long" pattern: a job that should give up
// soon when another process holds the lock, but that may then run much
// longer than it was willing to wait. A context.WithTimeout around WithLock
// cannot express it, since its deadline would end the work too:
//
//	err := mutex.WithLockWait(ctx, locker, 2*time.Second, "report:2026-11", func(ctx context.Context) error {
//		return buildReport(ctx) // may take minutes; ctx ends with the caller's or a lost lease
//	})
//	if errors.Is(err, mutex.ErrNotObtained) && ctx.Err() == nil {
//		// Someone else holds the report for longer than 2s: try later.
//	}
//
// When the wait runs out first, WithLockWait returns the error of Lock
// without running fn: for a *Mutex, a *NotObtainedError for which
// errors.Is(err, ErrNotObtained) and errors.Is(err, context.DeadlineExceeded)
// hold, while ctx.Err() is still nil, which tells it from the end of ctx
// itself. With wait zero, a held key gives TryLock's *NotObtainedError.
// Every other error, and the result of fn, are as for WithLock.
//
// Under a context that already holds key through l, fn joins the held
// lease at once, as with WithLock. Bad input (nil l or fn, an empty key, a
// negative wait) gives an error wrapping ErrInvalid before any Redis call.
func WithLockWait(ctx context.Context, l Locker, wait time.Duration, key string, fn func(ctx context.Context) error) error {
	if wait < 0 {
		return fmt.Errorf("%w: negative wait %v for WithLockWait", ErrInvalid, wait)
	}
	keys := []string{key}
	return withLock(ctx, "WithLockWait", l, keys, fn, func() (Lease, error) {
		if wait == 0 {
			return l.TryLock(ctx, keys...)
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		return l.Lock(wctx, keys...)
	})
}

// withLock is WithLockMany with acquire in place of l.Lock; caller names
// the function in errors about bad input.
func withLock(ctx context.Context, caller string, l Locker, keys []string, fn func(ctx context.Context) error, acquire func() (Lease, error)) error {
	if l == nil {
		return fmt.Errorf("%w: nil Locker for %s", ErrInvalid, caller)
	}
	if fn == nil {
		return fmt.Errorf("%w: nil function for %s", ErrInvalid, caller)
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: no keys for %s", ErrInvalid, caller)
	}
	if _, ok := HeldLease(ctx, l, keys...); ok {
		return fn(ctx)
	}
	lease, err := acquire()
	if err != nil {
		return err
	}
	return RunLocked(ctx, l, lease, fn)
}

// RunLocked runs fn under lease, which was obtained from l, and unlocks the
// lease afterwards. It is the part of WithLock that comes after Lock, for
// callers that obtain their leases themselves.
//
// fn gets a context that records the lease (see ContextWithLease), so that
// WithLock on the same keys and l under it joins the lease, and that is
// cancelled when the lease ends before fn returns; context.Cause then gives
// an error wrapping the lease's Err (ErrNotHeld when it was lost).
//
// While fn runs, the process-wide Renewer (see DefaultRenewer) extends the
// lease each time a third of its remaining validity has passed, unless it
// is extended in the background already (see IsAutoExtended). Validity is
// read from the lease or a lease behind its decorators (see Deadline); a
// lease with none is extended every FallbackExtendInterval. The lease's own
// Extend is called, so its decorators see the extensions. A failed
// extension is retried until the lease ends; one that finds a key held by
// another owner ends the lease, and so cancels fn's context, at once.
//
// After fn returns, or panics, RunLocked cancels fn's context, stops the
// extensions without waiting for one in flight (it finds the keys released
// if it reaches Redis after the Unlock, and changes nothing), and unlocks
// the lease with a context that is not cancelled with ctx and times out
// after UnlockTimeout. A panic of fn then goes on. Otherwise RunLocked
// returns errors.Join(fn's error, the unlock error); the unlock error wraps
// ErrNotHeld if the lease was lost meanwhile, so a caller learns that fn did
// not run under the lock to its end.
//
// If the lease has already ended when RunLocked is called, fn does not run
// and the error wraps the lease's Err.
func RunLocked(ctx context.Context, l Locker, lease Lease, fn func(ctx context.Context) error) (err error) {
	if l == nil {
		return fmt.Errorf("%w: nil Locker for RunLocked", ErrInvalid)
	}
	if lease == nil {
		return fmt.Errorf("%w: nil Lease for RunLocked", ErrInvalid)
	}
	if fn == nil {
		return fmt.Errorf("%w: nil function for RunLocked", ErrInvalid)
	}
	unlock := func() error {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), UnlockTimeout)
		defer cancel()
		return lease.Unlock(uctx)
	}
	if lerr := lease.Err(); lerr != nil {
		uerr := unlock()
		if errors.Is(uerr, ErrNotHeld) || errors.Is(uerr, ErrReleased) {
			uerr = nil // says nothing more than lerr
		}
		return errors.Join(fmt.Errorf("run locked: %w", lerr), uerr)
	}

	fnCtx, cancelFn := context.WithCancelCause(ContextWithLease(ctx, l, lease))
	k, kerr := keep(lease, cancelFn)
	if kerr != nil {
		cancelFn(kerr)
		return errors.Join(fmt.Errorf("run locked: %w", kerr), unlock())
	}
	var fnErr error
	returned := false
	defer func() {
		cancelFn(context.Canceled)
		k.stop()
		uerr := unlock()
		if returned {
			err = errors.Join(fnErr, uerr)
		}
		// Otherwise fn panicked (or called runtime.Goexit): the panic goes on
		// now that the keys are released.
	}()
	fnErr = fn(fnCtx)
	returned = true
	return fnErr
}

// keeper keeps a lease while a function runs under it: the process-wide
// Renewer extends the lease, and a goroutine cancels the function's context
// when the lease ends.
type keeper struct {
	renewal *Renewal      // nil for a lease extended in the background
	quit    chan struct{} // closed by stop
	exited  chan struct{} // closed when the goroutine returns
}

// keep starts keeping lease; cancel cancels the function's context.
func keep(lease Lease, cancel context.CancelCauseFunc) (*keeper, error) {
	k := &keeper{quit: make(chan struct{}), exited: make(chan struct{})}
	if !IsAutoExtended(lease) {
		r, err := defaultRenewer.Renew(lease, RenewPolicy{})
		if err != nil {
			return nil, err
		}
		k.renewal = r
	}
	go func() {
		defer close(k.exited)
		select {
		case <-k.quit:
		case <-lease.Done():
			cancel(lostCause(lease.Err()))
		}
	}()
	return k, nil
}

// stop stops the extensions and the goroutine, and waits for the goroutine.
func (k *keeper) stop() {
	if k.renewal != nil {
		k.renewal.Stop()
	}
	close(k.quit)
	<-k.exited
}

func lostCause(err error) error {
	if err == nil {
		err = ErrNotHeld
	}
	return fmt.Errorf("lease lost: %w", err)
}
