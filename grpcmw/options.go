package grpcmw

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/distlock/distlock/mutex"
)

// Option configures the interceptors.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	locker   mutex.Locker
	key      KeyFunc
	wait     time.Duration
	busyCode codes.Code
	failOpen bool
	skips    []func(fullMethod string) bool
	hook     func(ctx context.Context, fullMethod string, err error)
	// err is a setup error: every call fails with Internal.
	err error
}

func newConfig(l mutex.Locker, key KeyFunc, opts []Option) *config {
	c := &config{locker: l, key: key, busyCode: codes.Aborted}
	var errs []error
	if l == nil {
		errs = append(errs, fmt.Errorf("%w: nil Locker", mutex.ErrInvalid))
	}
	if key == nil {
		errs = append(errs, fmt.Errorf("%w: nil KeyFunc", mutex.ErrInvalid))
	}
	for _, o := range opts {
		if o != nil {
			o.apply(c)
		}
	}
	if c.wait < 0 {
		errs = append(errs, fmt.Errorf("%w: negative wait %v", mutex.ErrInvalid, c.wait))
	}
	if c.busyCode == codes.OK || c.busyCode > codes.Unauthenticated {
		errs = append(errs, fmt.Errorf("%w: busy code %v is not an error code", mutex.ErrInvalid, c.busyCode))
	}
	c.err = errors.Join(errs...)
	return c
}

// WithWait sets how long a call waits for a busy key before it fails with
// the busy code. Zero, the default, fails fast: one attempt, no waiting. The
// wait also ends with the call's context. A budget that runs out with no
// attempt seen to find the key held is answered as the package
// documentation says ("Status codes"): the busy code if Redis answers a
// check of the key, Unavailable if it does not. A negative d is a setup
// error.
func WithWait(d time.Duration) Option {
	return optionFunc(func(c *config) { c.wait = d })
}

// WithBusyCode sets the code of a call whose key stays busy, instead of
// codes.Aborted. codes.OK and unknown codes are setup errors.
func WithBusyCode(code codes.Code) Option {
	return optionFunc(func(c *config) { c.busyCode = code })
}

// WithFailOpen runs the handler without the lock when Redis fails, instead
// of failing with Unavailable, including when Redis did not answer within
// the WithWait budget. The handler then runs unserialized and LeaseFrom
// returns nil; the Redis error is passed to the WithErrorHook hook. Use it
// only where an occasional overlap is better than an outage. A busy key,
// and a call whose own context ended, are not failures: the call gets the
// busy code, DeadlineExceeded or Canceled, and the handler does not run.
func WithFailOpen() Option {
	return optionFunc(func(c *config) { c.failOpen = true })
}

// WithSkip lets the calls of the methods for which skip returns true run
// without a lock. skip gets the full method name, "/package.Service/Method".
// Several WithSkip options add up: a call is skipped if any matches.
func WithSkip(skip func(fullMethod string) bool) Option {
	return optionFunc(func(c *config) {
		if skip != nil {
			c.skips = append(c.skips, skip)
		}
	})
}

// WithErrorHook sets a function told of every error, for logging and
// metrics: those of rejected calls, Redis errors let through by
// WithFailOpen, and errors after the handler ran, such as a lease lost while
// it ran (wrapping mutex.ErrNotHeld) or a failed release. err wraps
// ErrMissingKey, ErrInvalidKey (a *ParseError for a request that
// KeyedFromRequest could not key), mutex.ErrNotObtained (a busy key: a
// *mutex.NotObtainedError that names it; or the call ended while waiting),
// ErrUnavailable (Redis failed or did not answer), mutex.ErrInvalid or
// mutex.ErrReentrant (the interceptor or its Locker is misconfigured), and
// may hold internal details that the client never sees.
func WithErrorHook(hook func(ctx context.Context, fullMethod string, err error)) Option {
	return optionFunc(func(c *config) { c.hook = hook })
}
