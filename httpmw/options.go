package httpmw

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/distlock/distlock/mutex"
)

// Option configures Serialize.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	locker     mutex.Locker
	key        KeyFunc
	wait       time.Duration
	busyStatus int
	failOpen   bool
	skips      []func(*http.Request) bool
	onError    func(http.ResponseWriter, *http.Request, error)
	hook       func(*http.Request, error)
	// err is a setup error: every request is answered 500 with it.
	err error
}

func newConfig(l mutex.Locker, key KeyFunc, opts []Option) *config {
	c := &config{locker: l, key: key, busyStatus: http.StatusConflict}
	var errs []error
	if l == nil {
		errs = append(errs, fmt.Errorf("%w: nil Locker", mutex.ErrInvalid))
	}
	if key == nil {
		errs = append(errs, fmt.Errorf("%w: nil KeyFunc", mutex.ErrInvalid))
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		o.apply(c)
	}
	if c.wait < 0 {
		errs = append(errs, fmt.Errorf("%w: negative wait %v", mutex.ErrInvalid, c.wait))
	}
	if c.busyStatus < 400 || c.busyStatus > 599 {
		errs = append(errs, fmt.Errorf("%w: busy status %d is not an error status", mutex.ErrInvalid, c.busyStatus))
	}
	c.err = errors.Join(errs...)
	return c
}

// WithWait sets how long a request waits for a busy key before it gets the
// busy answer. Zero, the default, fails fast: one attempt, no waiting. The
// wait also ends when the request's context does. A budget that runs out
// with no attempt seen to find the key held is answered as the package
// documentation says ("Answers"): busy if Redis answers a check of the key,
// 503 if it does not. A negative d is a setup error.
func WithWait(d time.Duration) Option {
	return optionFunc(func(c *config) { c.wait = d })
}

// WithBusyStatus sets the status answered when the key stays busy, instead
// of 409 Conflict. Retry-After is sent with any status. It must be a 4xx or
// 5xx status; anything else is a setup error.
func WithBusyStatus(code int) Option {
	return optionFunc(func(c *config) { c.busyStatus = code })
}

// WithFailOpen runs the handler without the lock when Redis fails, instead
// of answering 503, including when Redis did not answer within the WithWait
// budget. The handler then runs unserialized and LeaseFrom returns nil; the
// Redis error is passed to the WithErrorHook hook. Use it only where an
// occasional overlap is better than an outage. A busy key, and a request
// whose own context ended, are not failures: the request gets the busy or
// "request ended" answer and the handler does not run.
func WithFailOpen() Option {
	return optionFunc(func(c *config) { c.failOpen = true })
}

// WithSkip lets the requests for which skip returns true through without a
// key and without a lock. Several WithSkip and WithSkipMethods options add
// up: a request is skipped if any of them matches.
func WithSkip(skip func(*http.Request) bool) Option {
	return optionFunc(func(c *config) {
		if skip != nil {
			c.skips = append(c.skips, skip)
		}
	})
}

// WithSkipMethods lets requests with one of methods through without a lock,
// typically read-only ones: WithSkipMethods(http.MethodGet, http.MethodHead).
func WithSkipMethods(methods ...string) Option {
	methods = slices.Clone(methods)
	return WithSkip(func(r *http.Request) bool { return slices.Contains(methods, r.Method) })
}

// WithErrorHandler replaces the default answers of rejected requests. h
// must write the response. err wraps ErrMissingKey, ErrInvalidKey (a
// *ParseError for a path value that KeyedPathValue could not parse),
// mutex.ErrNotObtained (the key stayed busy: a *mutex.NotObtainedError that
// names the key and carries RetryAfter; or the request ended while waiting,
// with the context's error), ErrUnavailable (Redis failed or did not
// answer) or mutex.ErrInvalid and mutex.ErrReentrant (the middleware or its
// Locker is misconfigured). err may hold internal details: do not send it
// to the client.
func WithErrorHandler(h func(w http.ResponseWriter, r *http.Request, err error)) Option {
	return optionFunc(func(c *config) { c.onError = h })
}

// WithErrorHook sets a function told of every error, for logging and
// metrics: those of rejected requests (before the answer is written), Redis
// errors let through by WithFailOpen, and errors after the handler ran, such
// as a lease lost while it ran (wrapping mutex.ErrNotHeld) or a failed
// release. It must not write a response.
func WithErrorHook(hook func(r *http.Request, err error)) Option {
	return optionFunc(func(c *config) { c.hook = hook })
}
