package mutex

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

const (
	// UnlockTimeout bounds the Unlock that WithLock and RunLocked make after
	// the function returns. That Unlock does not end with the caller's
	// context, so a cancelled request still releases its keys.
	UnlockTimeout = 5 * time.Second

	// FallbackExtendInterval is how often RunLocked extends a lease that
	// reports no validity deadline (see RunLocked).
	FallbackExtendInterval = time.Second

	// minRetryDelay is the first pause after a failed extension.
	minRetryDelay = 10 * time.Millisecond
)

// AutoExtender is implemented by leases that are extended in the background,
// such as those of middleware.AutoExtend. RunLocked does not extend them
// again; it only watches them.
type AutoExtender interface {
	// AutoExtended reports whether the lease is extended in the background.
	AutoExtended() bool
}

// deadliner is implemented by leases that know the end of their validity,
// such as the leases of a Mutex.
type deadliner interface {
	Deadline() time.Time
}

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
// extended in the background (see AutoExtender) is extended while fn runs.
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
	if l == nil {
		return invalidf("nil Locker")
	}
	if fn == nil {
		return invalidf("nil function")
	}
	if len(keys) == 0 {
		return invalidf("no keys")
	}
	if _, ok := HeldLease(ctx, l, keys...); ok {
		return fn(ctx)
	}
	lease, err := l.Lock(ctx, keys...)
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
// While fn runs, the lease is extended each time a third of its remaining
// validity has passed, unless it is an AutoExtender whose AutoExtended
// reports true. Validity is read from a Deadline() time.Time method of the
// lease or of a lease behind its decorators (see Unwrapper); a lease with
// none is extended every FallbackExtendInterval. A failed extension is
// retried until the lease ends; one that reports ErrNotHeld or ErrReleased
// cancels fn's context at once.
//
// After fn returns, or panics, RunLocked stops the extension, waits for it,
// and unlocks the lease with a context that is not cancelled with ctx and
// times out after UnlockTimeout. A panic of fn then goes on. Otherwise
// RunLocked returns errors.Join(fn's error, the unlock error); the unlock
// error wraps ErrNotHeld if the lease was lost meanwhile, so a caller learns
// that fn did not run under the lock to its end.
//
// If the lease has already ended when RunLocked is called, fn does not run
// and the error wraps the lease's Err.
func RunLocked(ctx context.Context, l Locker, lease Lease, fn func(ctx context.Context) error) (err error) {
	if l == nil {
		return invalidf("nil Locker")
	}
	if lease == nil {
		return invalidf("nil Lease")
	}
	if fn == nil {
		return invalidf("nil function")
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
		return errors.Join(fmt.Errorf("mutex: run locked: %w", lerr), uerr)
	}

	fnCtx, cancelFn := context.WithCancelCause(ContextWithLease(ctx, l, lease))
	k := startKeeper(lease, cancelFn)
	var fnErr error
	returned := false
	defer func() {
		k.stop()
		cancelFn(context.Canceled)
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

// keeper extends a lease while a function runs under it and cancels the
// function's context when the lease ends.
type keeper struct {
	lease  Lease
	cancel context.CancelCauseFunc
	quit   context.Context // ends the keeper, and an extension in flight
	stopFn context.CancelFunc
	wg     sync.WaitGroup
}

func startKeeper(lease Lease, cancel context.CancelCauseFunc) *keeper {
	quit, stop := context.WithCancel(context.Background())
	k := &keeper{lease: lease, cancel: cancel, quit: quit, stopFn: stop}
	k.wg.Add(1)
	go k.run()
	return k
}

// stop ends the keeper and waits for it.
func (k *keeper) stop() {
	k.stopFn()
	k.wg.Wait()
}

func (k *keeper) run() {
	defer k.wg.Done()
	var tick <-chan time.Time
	var timer *time.Timer
	if !isAutoExtended(k.lease) {
		timer = time.NewTimer(k.nextExtend())
		defer timer.Stop()
		tick = timer.C
	}
	dl := findDeadliner(k.lease)
	failures := 0
	for {
		select {
		case <-k.quit.Done():
			return
		case <-k.lease.Done():
			k.cancel(lostCause(k.lease.Err()))
			return
		case <-tick:
		}
		ctx, cancel := k.extendContext(dl)
		err := k.lease.Extend(ctx)
		cancel()
		switch {
		case err == nil:
			failures = 0
			timer.Reset(k.nextExtend())
		case k.quit.Err() != nil:
			return
		case errors.Is(err, ErrNotHeld) || errors.Is(err, ErrReleased):
			k.cancel(lostCause(err))
			return
		default:
			// A Redis failure: the lease may still hold its keys. Try again
			// soon, until it succeeds or the lease ends.
			failures++
			timer.Reset(k.retryDelay(dl, failures))
		}
	}
}

// nextExtend returns the time until the next extension: a third of the
// remaining validity.
func (k *keeper) nextExtend() time.Duration {
	dl := findDeadliner(k.lease)
	if dl == nil {
		return FallbackExtendInterval
	}
	return max(time.Until(dl.Deadline())/3, time.Millisecond)
}

// retryDelay returns the pause after the n-th failed extension in a row:
// doubling from minRetryDelay, at most a quarter of the remaining validity.
func (k *keeper) retryDelay(dl deadliner, n int) time.Duration {
	limit := FallbackExtendInterval / 2
	if dl != nil {
		limit = time.Until(dl.Deadline()) / 4
	}
	d := minRetryDelay << min(n-1, 16)
	return max(min(d, limit), time.Millisecond)
}

// extendContext bounds an extension by the lease's validity deadline, after
// which it cannot succeed, and ends it when the keeper stops.
func (k *keeper) extendContext(dl deadliner) (context.Context, context.CancelFunc) {
	if dl != nil {
		return context.WithDeadline(k.quit, dl.Deadline())
	}
	return context.WithTimeout(k.quit, FallbackExtendInterval)
}

func lostCause(err error) error {
	if err == nil {
		err = ErrNotHeld
	}
	return fmt.Errorf("mutex: lease lost: %w", err)
}

// isAutoExtended reports whether lease, or a lease behind its decorators, is
// extended in the background.
func isAutoExtended(lease Lease) bool {
	for lease != nil {
		if a, ok := lease.(AutoExtender); ok && a.AutoExtended() {
			return true
		}
		u, ok := lease.(Unwrapper)
		if !ok {
			return false
		}
		lease = u.Unwrap()
	}
	return false
}

// Deadline returns the end of the validity of lease, or of the first lease
// behind its decorators (see Unwrapper) that knows it: the moment until
// which it surely holds its keys unless extended. The leases of a Mutex know
// it; ok is false if no lease in the chain does.
func Deadline(lease Lease) (deadline time.Time, ok bool) {
	if d := findDeadliner(lease); d != nil {
		return d.Deadline(), true
	}
	return time.Time{}, false
}

// findDeadliner returns lease, or the first lease behind its decorators,
// that reports its validity deadline, or nil.
func findDeadliner(lease Lease) deadliner {
	for lease != nil {
		if d, ok := lease.(deadliner); ok {
			return d
		}
		u, ok := lease.(Unwrapper)
		if !ok {
			return nil
		}
		lease = u.Unwrap()
	}
	return nil
}
