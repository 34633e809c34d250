package mutex

import (
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	// ErrNotObtained reports that a lock could not be acquired: a key was held
	// by another owner when TryLock tried, or a Lock's context ended first.
	ErrNotObtained = errors.New("mutex: not obtained")

	// ErrNotHeld reports that a lease no longer holds its keys: its validity
	// ran out without an Extend, or another owner holds a key now.
	ErrNotHeld = errors.New("mutex: lock not held")

	// ErrReleased reports that a lease was already released with Unlock.
	ErrReleased = errors.New("mutex: lease released")

	// ErrClosed reports that the Mutex was closed.
	ErrClosed = errors.New("mutex: closed")

	// ErrNotReplicated reports a grant or an extension that fewer replicas
	// acknowledged than Config.Replicas asks for, within its
	// ReplicaTimeout.
	ErrNotReplicated = errors.New("mutex: not replicated")

	// ErrClockStalled reports an Unlock that Redis refused because the
	// server's clock had not passed the lease's fence: it is stuck or
	// stepped back, and a grant after the release could repeat the fence.
	// The keys stay held until their TTL runs out; an Unlock called again
	// once the clock has moved on releases them.
	ErrClockStalled = errors.New("mutex: server clock stalled")

	// ErrInvalid is wrapped by every error about bad input: a nil client, a
	// bad configuration or bad keys. Such errors are returned before any
	// Redis call.
	ErrInvalid = errors.New("mutex: invalid argument")
)

// NotObtainedError is returned when a key is held by another owner. It wraps
// ErrNotObtained and, for a wait that ended with its context, the context's
// error, so both errors.Is(err, ErrNotObtained) and errors.Is(err, ctx.Err())
// hold.
type NotObtainedError struct {
	// Key is the key found held by another owner at the last attempt, or,
	// for a Lock that waited behind another waiter of its Mutex without an
	// attempt of its own, the key that waiter found held; empty if no
	// attempt got an answer from Redis.
	Key string
	// RetryAfter is the remaining TTL of that key at the last attempt, a hint
	// for when it frees up at the latest; zero if unknown.
	RetryAfter time.Duration
	// Cause is the context error that ended a wait, or nil.
	Cause error
}

func (e *NotObtainedError) Error() string {
	msg := "mutex: not obtained"
	if e.Key != "" {
		msg += fmt.Sprintf(": %q is held", e.Key)
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap returns ErrNotObtained and the cause, if any.
func (e *NotObtainedError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrNotObtained, e.Cause}
	}
	return []error{ErrNotObtained}
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// clockStalled turns the release script's CLOCK error reply into an error
// wrapping ErrClockStalled; it returns any other error as it is.
func clockStalled(err error, fence int64) error {
	if redis.HasErrorPrefix(err, "CLOCK") {
		return fmt.Errorf("%w: the clock has not passed the lease's fence %d; the keys stay held until their TTL runs out", ErrClockStalled, fence)
	}
	return err
}
