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

// SetupError is the error of a key function whose own configuration is
// bad, such as one built from an unusable keyed.Keyed: the middleware
// answers it as its own setup error, not as the client's fault. Err wraps
// mutex.ErrInvalid.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *SetupError) Unwrap() error { return e.Err }

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

// ProbeTimeout bounds the Check with which Acquire asks whether Redis
// answers, after a wait budget ran out with no attempt seen to find the key
// held.
const ProbeTimeout = 250 * time.Millisecond

// Acquire obtains a lease on key: with TryLock when wait is zero, otherwise
// with Lock waiting at most wait. Its errors are sorted by the answer they
// call for, so that one outage gets one answer:
//
//   - Reentrancy and ErrInvalid errors come back as they are.
//   - When ctx ended before the Locker answered, or by the time the lease
//     was granted (the client gave up: its handler need not run, and the
//     lease is released), the error wraps mutex.ErrNotObtained and ctx's
//     error.
//   - Any error of the Locker that does not wrap mutex.ErrNotObtained is a
//     failure (Redis down or slow, Mutex closed), even if the wait budget
//     ran out meanwhile: unavailable is true.
//   - Contention, an error wrapping mutex.ErrNotObtained, is a
//     *mutex.NotObtainedError naming key: the key was held at the one
//     attempt, or when the budget ran out (its Cause is then
//     context.DeadlineExceeded).
//
// A budget can run out with no attempt seen to find the key held: either
// Redis did not answer within it, or the call, queued behind other calls of
// the same *mutex.Mutex waiting for key, made no attempt of its own (the
// Mutex then reports no Key). Acquire tells the two apart with a Check of
// key bounded by ProbeTimeout: if Redis answers, the key counts as busy; if
// not, unavailable is true, with the error of the Check.
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
	case errors.Is(err, mutex.ErrReentrant), errors.Is(err, mutex.ErrInvalid):
		// ErrInvalid for a key that passed CheckKey means the Locker is
		// misconfigured; the caller tells.
		return nil, false, err
	case ctxErr != nil:
		// The request ended, during a Redis call or not: not a Redis
		// failure, and not contention either.
		if errors.Is(err, mutex.ErrNotObtained) {
			return nil, false, err
		}
		return nil, false, &mutex.NotObtainedError{Cause: ctxErr}
	case !errors.Is(err, mutex.ErrNotObtained):
		return nil, true, err
	case waitErr == nil || heldKey(err) != "":
		return nil, false, naming(err, key)
	}
	pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	_, perr := l.Check(pctx, key)
	cancel()
	if ctxErr := ended(ctx); ctxErr != nil {
		return nil, false, &mutex.NotObtainedError{Cause: ctxErr}
	}
	if perr != nil {
		return nil, true, fmt.Errorf("no answer within the %v wait: %w", wait, perr)
	}
	return nil, false, naming(err, key)
}

// heldKey returns the key that err reports held, if any.
func heldKey(err error) string {
	var ne *mutex.NotObtainedError
	if errors.As(err, &ne) {
		return ne.Key
	}
	return ""
}

// naming returns err, an error wrapping mutex.ErrNotObtained, as a
// *mutex.NotObtainedError that names a held key: err itself if it names
// one, or else one naming key with err's RetryAfter and Cause.
func naming(err error, key string) error {
	var ne *mutex.NotObtainedError
	if !errors.As(err, &ne) {
		return &mutex.NotObtainedError{Key: key}
	}
	if ne.Key != "" {
		return err
	}
	return &mutex.NotObtainedError{Key: key, RetryAfter: ne.RetryAfter, Cause: ne.Cause}
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
