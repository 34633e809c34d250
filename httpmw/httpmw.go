package httpmw

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/distlock/distlock/internal/serialize"
	"github.com/distlock/distlock/mutex"
)

var (
	// ErrMissingKey reports a request without a lock key.
	ErrMissingKey = errors.New("httpmw: missing lock key")
	// ErrInvalidKey reports a lock key that failed validation, or a KeyFunc
	// error.
	ErrInvalidKey = errors.New("httpmw: invalid lock key")
	// ErrUnavailable reports that the Locker failed (Redis is down, slow or
	// the Mutex is closed); it wraps the Locker's error.
	ErrUnavailable = errors.New("httpmw: lock service unavailable")
)

// ParseError reports a request value that a KeyFunc made by KeyedPathValue
// could not turn into a lock key: the value is not a valid key (too long,
// not UTF-8, control characters), its parse function refused it, or the
// keyed.Keyed refused the parsed key. It wraps ErrInvalidKey and Err. Its
// default answer is 400 with "invalid " and Source, such as
// `invalid path value "id"`.
type ParseError struct {
	// Source names the part of the request that held the value, such as
	// `path value "id"`. It never holds the value.
	Source string
	// Err says what was wrong with the value.
	Err error
}

func (e *ParseError) Error() string {
	msg := ErrInvalidKey.Error() + ": " + e.Source
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns ErrInvalidKey and Err, if any.
func (e *ParseError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalidKey}
	}
	return []error{ErrInvalidKey, e.Err}
}

// LeaseFrom returns the lease the request holds, from the context of a
// request running under Serialize, or nil (outside Serialize, for skipped
// requests, and with WithFailOpen when Redis failed). Pass its Fence to
// the storage the handler writes, so that it can reject a write of a
// request whose lease was lost.
func LeaseFrom(ctx context.Context) mutex.Lease {
	return mutex.LeaseFromContext(ctx)
}

// Serialize returns middleware that runs the handlers of requests with the
// same key one at a time, across every process whose Locker shares the
// Redis, and those of different keys in parallel. See the package
// documentation for the steps and answers.
//
// A nil Locker or KeyFunc, a negative WithWait or a non-error
// WithBusyStatus is a setup error: Serialize does not panic, but every
// request is answered 500 "lock misconfigured" and the error, wrapping
// mutex.ErrInvalid, is passed to the WithErrorHook hook.
func Serialize(l mutex.Locker, key KeyFunc, opts ...Option) func(http.Handler) http.Handler {
	c := newConfig(l, key, opts)
	return func(next http.Handler) http.Handler {
		h := &handler{c: c, next: next, err: c.err}
		if next == nil && h.err == nil {
			h.err = fmt.Errorf("%w: nil handler", mutex.ErrInvalid)
		}
		return h
	}
}

type handler struct {
	c    *config
	next http.Handler
	err  error
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.c
	if h.err != nil {
		h.reject(w, r, h.err)
		return
	}
	for _, skip := range c.skips {
		if skip(r) {
			h.next.ServeHTTP(w, r)
			return
		}
	}
	key, err := c.key(r)
	var setup *serialize.SetupError
	switch {
	case err == nil:
		err = validateKey(key)
	case errors.As(err, &setup):
		// Answered 500 "lock misconfigured".
	case !errors.Is(err, ErrMissingKey) && !errors.Is(err, ErrInvalidKey):
		err = fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	if err != nil {
		h.reject(w, r, err)
		return
	}

	ctx := r.Context()
	if lease, ok := mutex.HeldLease(ctx, c.locker, key); ok {
		// An enclosing Serialize or WithLock holds the key already.
		h.next.ServeHTTP(w, r.WithContext(mutex.ContextWithLease(ctx, c.locker, lease)))
		return
	}
	lease, err := h.acquire(ctx, key)
	if err != nil {
		if c.failOpen && errors.Is(err, ErrUnavailable) {
			h.report(r, err)
			h.next.ServeHTTP(w, r)
			return
		}
		h.reject(w, r, err)
		return
	}
	ran := false
	err = mutex.RunLocked(ctx, c.locker, lease, func(ctx context.Context) error {
		ran = true
		h.next.ServeHTTP(w, r.WithContext(ctx))
		return nil
	})
	switch {
	case !ran:
		// The lease ended between its grant and the start of the handler:
		// Redis lost the key or did not answer in time.
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		if c.failOpen {
			h.report(r, err)
			h.next.ServeHTTP(w, r)
			return
		}
		h.reject(w, r, err)
	case err != nil:
		// The handler ran; the lease was lost meanwhile or its release
		// failed. The response is the handler's.
		h.report(r, err)
	}
}

// acquire obtains the lease on key and classifies the errors.
func (h *handler) acquire(ctx context.Context, key string) (mutex.Lease, error) {
	lease, unavailable, err := serialize.Acquire(ctx, h.c.locker, key, h.c.wait)
	if unavailable {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return lease, err
}

func (h *handler) report(r *http.Request, err error) {
	if h.c.hook != nil {
		h.c.hook(r, err)
	}
}

func (h *handler) reject(w http.ResponseWriter, r *http.Request, err error) {
	h.report(r, err)
	if h.c.onError != nil {
		h.c.onError(w, r, err)
		return
	}
	var parse *ParseError
	switch {
	case errors.Is(err, ErrMissingKey):
		http.Error(w, "missing lock key", http.StatusBadRequest)
	case errors.As(err, &parse):
		http.Error(w, "invalid "+parse.Source, http.StatusBadRequest)
	case errors.Is(err, ErrInvalidKey):
		http.Error(w, "invalid lock key", http.StatusBadRequest)
	case errors.Is(err, mutex.ErrNotObtained):
		if r.Context().Err() != nil {
			http.Error(w, "request ended", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(err)))
		http.Error(w, "resource busy", h.c.busyStatus)
	case errors.Is(err, ErrUnavailable):
		http.Error(w, "lock service unavailable", http.StatusServiceUnavailable)
	default:
		http.Error(w, "lock misconfigured", http.StatusInternalServerError)
	}
}

// retryAfterSeconds returns the holder's remaining lease time in whole
// seconds, rounded up, at least 1.
func retryAfterSeconds(err error) int {
	var ne *mutex.NotObtainedError
	if !errors.As(err, &ne) || ne.RetryAfter <= 0 {
		return 1
	}
	return max(1, int((ne.RetryAfter+time.Second-1)/time.Second))
}
