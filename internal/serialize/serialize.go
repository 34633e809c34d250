package serialize

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/distlock/distlock/mutex"
)

// CheckKey checks a key taken from a request before it reaches Redis. It
// reports whether the key is missing, or else the problem with it, if any.
// The problem never quotes the key, which is untrusted input.
func CheckKey(key string, maxLen int) (missing bool, problem string) {
	if key == "" {
		return true, ""
	}
	if len(key) > maxLen {
		return false, fmt.Sprintf("%d bytes, longer than %d", len(key), maxLen)
	}
	if !utf8.ValidString(key) {
		return false, "not valid UTF-8"
	}
	for i, c := range key {
		if unicode.IsControl(c) {
			return false, fmt.Sprintf("control character at byte %d", i)
		}
	}
	return false, ""
}

// Acquire obtains a lease on key: with TryLock when wait is zero, otherwise
// with Lock waiting at most wait.
//
// Reentrancy and ErrInvalid errors come back as they are, and so does
// contention (an error wrapping mutex.ErrNotObtained). When ctx ended before
// the Locker answered, or by the time the lease was granted (the client gave
// up: its handler need not run, and the lease is released), the error is a
// *mutex.NotObtainedError with ctx's error as its cause. When the wait budget
// ran out before the Locker answered, whatever its error (a Redis call cut
// short by the budget, or one that took longer than it), the error is a
// *mutex.NotObtainedError with context.DeadlineExceeded as its cause: the
// lock was not obtained within the budget, and a reply that came too late
// says nothing about Redis being down. Any other failure is the Locker's
// (Redis down or slow, Mutex closed): unavailable is true.
func Acquire(ctx context.Context, l mutex.Locker, key string, wait time.Duration) (lease mutex.Lease, unavailable bool, err error) {
	var waitErr error
	if wait == 0 {
		lease, err = l.TryLock(ctx, key)
	} else {
		wctx, cancel := context.WithTimeout(ctx, wait)
		lease, err = l.Lock(wctx, key)
		waitErr = ended(wctx)
		cancel()
	}
	ctxErr := ended(ctx)
	switch {
	case err == nil && ctxErr != nil:
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mutex.UnlockTimeout)
		defer cancel()
		_ = lease.Unlock(uctx)
		return nil, false, &mutex.NotObtainedError{Cause: ctxErr}
	case err == nil:
		return lease, false, nil
	case errors.Is(err, mutex.ErrNotObtained), errors.Is(err, mutex.ErrReentrant), errors.Is(err, mutex.ErrInvalid):
		// ErrInvalid for a key that passed CheckKey means the Locker is
		// misconfigured; the caller tells.
		return nil, false, err
	case ctxErr != nil:
		// The request ended during a Redis call: not a Redis failure.
		return nil, false, &mutex.NotObtainedError{Cause: ctxErr}
	case waitErr != nil:
		// The budget ran out during a Redis call: the key is busy.
		return nil, false, &mutex.NotObtainedError{Cause: waitErr}
	}
	return nil, true, err
}

// ended returns ctx's error, or context.DeadlineExceeded once ctx's deadline
// has passed even if ctx has not noticed yet: a client whose socket deadline
// is ctx's deadline may fail a call just before ctx reports its end.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
