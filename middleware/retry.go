package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jpillora/backoff"

	"github.com/distlock/distlock/mutex"
)

// Defaults of Retry.
const (
	DefaultAttempts = 5
	DefaultFactor   = 2.0
	DefaultMinDelay = 50 * time.Millisecond
	DefaultMaxDelay = 2 * time.Second
)

// RetryOption configures Retry.
type RetryOption interface {
	applyRetry(*retryConfig)
}

type retryOptionFunc func(*retryConfig)

func (f retryOptionFunc) applyRetry(c *retryConfig) { f(c) }

type retryConfig struct {
	attempts   int
	factor     float64
	minDelay   time.Duration
	maxDelay   time.Duration
	jitter     bool
	contention bool
	retryIf    func(error) bool
	err        error // a bad option, reported by every call
}

func (c *retryConfig) invalid(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: "+format, append([]any{mutex.ErrInvalid}, args...)...)
	}
}

// WithAttempts sets how many times a call is made at most, the first one
// included (DefaultAttempts if not given), like redsync's WithTries(n).
// bsm/redislock's LimitRetry(s, n) counts retries after the first attempt:
// it is WithAttempts(n+1). n must be at least 1.
func WithAttempts(n int) RetryOption {
	return retryOptionFunc(func(c *retryConfig) {
		if n < 1 {
			c.invalid("retry attempts %d, want at least 1", n)
			return
		}
		c.attempts = n
	})
}

// WithFactor sets by how much the delay grows after each attempt
// (DefaultFactor if not given): the Factor of the jpillora/backoff Backoff
// that computes the delays. A factor of 1 keeps the delay constant, like
// redsync's WithRetryDelay and bsm/redislock's LinearBackoff; 2 doubles it,
// like bsm/redislock's ExponentialBackoff. f must be at least 1.
func WithFactor(f float64) RetryOption {
	return retryOptionFunc(func(c *retryConfig) {
		if !(f >= 1) {
			c.invalid("retry factor %v, want at least 1", f)
			return
		}
		c.factor = f
	})
}

// WithMinDelay sets the delay before the second attempt (DefaultMinDelay if
// not given): the Backoff's Min, the min of bsm/redislock's
// ExponentialBackoff(min, max). d must be positive.
func WithMinDelay(d time.Duration) RetryOption {
	return retryOptionFunc(func(c *retryConfig) {
		if d <= 0 {
			c.invalid("retry min delay %v, want > 0", d)
			return
		}
		c.minDelay = d
	})
}

// WithMaxDelay caps the delay between attempts (DefaultMaxDelay if not
// given): the Backoff's Max, the max of bsm/redislock's
// ExponentialBackoff(min, max). d must be positive and not below the min
// delay.
func WithMaxDelay(d time.Duration) RetryOption {
	return retryOptionFunc(func(c *retryConfig) {
		if d <= 0 {
			c.invalid("retry max delay %v, want > 0", d)
			return
		}
		c.maxDelay = d
	})
}

// WithJitter chooses whether each delay is drawn at random between the min
// delay and its exponential value (the default; the Backoff's Jitter) or is
// that value exactly, as redsync's WithRetryDelay and bsm/redislock's
// strategies give it. Jitter keeps clients that failed together from
// retrying together.
func WithJitter(on bool) RetryOption {
	return retryOptionFunc(func(c *retryConfig) { c.jitter = on })
}

// WithRetryOnContention makes TryLock retry when a key is held by another
// owner, polling with the same delays until the attempts run out or the
// context ends, as redsync's Lock and bsm/redislock's Obtain with a
// RetryStrategy do. A delay is never longer than the remaining TTL of the
// holder that TryLock found. Off by default: Lock waits for a release
// announced over pub/sub without polling, and Lock under a context with a
// timeout is the better choice in most cases.
func WithRetryOnContention(on bool) RetryOption {
	return retryOptionFunc(func(c *retryConfig) { c.contention = on })
}

// WithRetryIf replaces IsTransient as the test of which errors are retried.
// Context errors and the mutex sentinels listed at IsTransient are never
// retried, whatever pred says.
func WithRetryIf(pred func(error) bool) RetryOption {
	return retryOptionFunc(func(c *retryConfig) {
		if pred == nil {
			c.invalid("nil predicate for retry")
			return
		}
		c.retryIf = pred
	})
}

// Retry returns a Middleware that repeats Lock, TryLock and Check calls that
// fail with a transient error (see IsTransient and WithRetryIf), with
// exponential backoff and jitter between attempts, until a call succeeds,
// fails for good, the attempts run out or the context ends.
//
// It never retries context errors, bad input or ownership errors. Contention
// is not retried either (Lock already waits for it), unless
// WithRetryOnContention turns TryLock into bounded polling.
//
// When the attempts run out, the last error is returned wrapped, so that
// errors.Is sees through it. When the context ends during a delay, the error
// wraps both the context's error and the last error; for a TryLock that
// polled on contention it is a *mutex.NotObtainedError whose Cause is the
// context's error, as the Mutex returns for an ended wait.
//
// Leases are returned as the wrapped Locker made them: their Extend and
// Unlock are not retried (Unlock may be called again after a Redis error;
// AutoExtend retries its extensions itself). The context is passed on
// unchanged, so reentrancy checks see the leases it records.
//
// Options that are out of range make every call fail with an error wrapping
// mutex.ErrInvalid, before any Redis call.
//
// The delays come from a jpillora/backoff Backoff: the nth delay is the min
// delay times the factor to the power n-1, capped at the max delay; with
// jitter it is drawn at random between the min delay and that value. The
// retry settings of other Go lock libraries map onto the options as
// follows, for a TryLock through Retry:
//
//   - redsync's WithTries(n) and WithRetryDelay(d): WithAttempts(n),
//     WithMinDelay(d), WithMaxDelay(d), WithFactor(1), WithJitter(false) and
//     WithRetryOnContention(true). redsync retries a failed acquire whether
//     the lock was held or Redis failed; with those options Retry retries
//     both too, Redis failures when they are transient (see IsTransient).
//   - bsm/redislock's LinearBackoff(d): WithMinDelay(d), WithMaxDelay(d),
//     WithFactor(1) and WithJitter(false); ExponentialBackoff(min, max),
//     which doubles its delays between min and max: WithMinDelay(min),
//     WithMaxDelay(max), WithFactor(2) and WithJitter(false);
//     LimitRetry(s, n): WithAttempts(n+1); and
//     WithRetryOnContention(true) for the polling. bsm/redislock retries
//     only while the lock is held and returns Redis errors at once, while
//     Retry also retries transient Redis failures (see IsTransient; narrow
//     them with WithRetryIf).
func Retry(opts ...RetryOption) Middleware {
	cfg := &retryConfig{
		attempts: DefaultAttempts,
		factor:   DefaultFactor,
		minDelay: DefaultMinDelay,
		maxDelay: DefaultMaxDelay,
		jitter:   true,
		retryIf:  IsTransient,
	}
	for _, o := range opts {
		if o == nil {
			cfg.invalid("nil option for retry")
			continue
		}
		o.applyRetry(cfg)
	}
	if cfg.err == nil && cfg.maxDelay < cfg.minDelay {
		cfg.invalid("retry max delay %v below min delay %v", cfg.maxDelay, cfg.minDelay)
	}
	return func(next mutex.Locker) mutex.Locker {
		return &retryLocker{next: next, cfg: cfg}
	}
}

type retryLocker struct {
	next mutex.Locker
	cfg  *retryConfig
}

var _ mutex.Locker = (*retryLocker)(nil)

func (r *retryLocker) check() error {
	if r.cfg.err != nil {
		return r.cfg.err
	}
	if r.next == nil {
		return fmt.Errorf("%w: nil Locker for retry", mutex.ErrInvalid)
	}
	return nil
}

// Lock calls the wrapped Lock until it succeeds or fails for good.
func (r *retryLocker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return retry(ctx, r.cfg, false, func() (mutex.Lease, error) { return r.next.Lock(ctx, keys...) })
}

// TryLock calls the wrapped TryLock until it succeeds or fails for good;
// with WithRetryOnContention, contention is retried too.
func (r *retryLocker) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return retry(ctx, r.cfg, r.cfg.contention, func() (mutex.Lease, error) { return r.next.TryLock(ctx, keys...) })
}

// Check calls the wrapped Check until it succeeds or fails for good.
func (r *retryLocker) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	if err := r.check(); err != nil {
		return mutex.Available, err
	}
	return retry(ctx, r.cfg, false, func() (mutex.Status, error) { return r.next.Check(ctx, keys...) })
}

// retry runs op until it succeeds or fails for good.
func retry[T any](ctx context.Context, cfg *retryConfig, contention bool, op func() (T, error)) (T, error) {
	b := backoff.Backoff{Factor: cfg.factor, Jitter: cfg.jitter, Min: cfg.minDelay, Max: cfg.maxDelay}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for attempt := 1; ; attempt++ {
		v, err := op()
		if err == nil {
			return v, nil
		}
		var zero T
		contended := contention && isContention(err)
		if !contended && (isFinal(err) || !cfg.retryIf(err)) {
			if attempt == 1 {
				return zero, err
			}
			return zero, fmt.Errorf("retry: attempt %d: %w", attempt, err)
		}
		if attempt >= cfg.attempts {
			return zero, fmt.Errorf("retry: gave up after %d attempts: %w", attempt, err)
		}
		d := b.Duration()
		var blocked *mutex.NotObtainedError
		if contended && errors.As(err, &blocked) && blocked.RetryAfter > 0 {
			d = min(d, blocked.RetryAfter+time.Millisecond)
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			if contended {
				e := &mutex.NotObtainedError{Cause: ctx.Err()}
				if blocked != nil {
					e.Key, e.RetryAfter = blocked.Key, blocked.RetryAfter
				}
				return zero, e
			}
			return zero, fmt.Errorf("retry: %w after %d attempts: %w", ctx.Err(), attempt, err)
		}
	}
}

// isContention reports whether err says that a key was held by another
// owner, and not that a wait ended with its context.
func isContention(err error) bool {
	return errors.Is(err, mutex.ErrNotObtained) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}
