package grpcmw

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/distlock/distlock/internal/serialize"
	"github.com/distlock/distlock/mutex"
)

var (
	// ErrMissingKey reports a call without a lock key.
	ErrMissingKey = errors.New("grpcmw: missing lock key")
	// ErrInvalidKey reports a lock key that failed validation, or a KeyFunc
	// error.
	ErrInvalidKey = errors.New("grpcmw: invalid lock key")
	// ErrUnavailable reports that the Locker failed (Redis is down, slow or
	// the Mutex is closed); it wraps the Locker's error.
	ErrUnavailable = errors.New("grpcmw: lock service unavailable")
)

// ParseError reports a request that a KeyFunc made by KeyedFromRequest
// could not turn into a lock key: its key function returned an error, or
// the keyed.Keyed refused the key. It wraps ErrInvalidKey and Err. The call
// fails with InvalidArgument "invalid lock key in request".
type ParseError struct {
	// Err says what was wrong with the request.
	Err error
}

func (e *ParseError) Error() string {
	msg := ErrInvalidKey.Error() + ": request"
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

// LeaseFrom returns the lease the call holds, from the context of a call
// running under one of the interceptors, or nil (outside them, for calls
// that are not serialized, and with WithFailOpen when Redis failed). Pass
// its Fence to the storage the handler writes, so that it can reject a
// write of a call whose lease was lost.
func LeaseFrom(ctx context.Context) mutex.Lease {
	return mutex.LeaseFromContext(ctx)
}

// UnaryServerInterceptor returns an interceptor that runs the unary calls
// with the same key one at a time, across every process whose Locker shares
// the Redis, and those of different keys in parallel. See the package
// documentation for the steps and status codes.
//
// A nil Locker or KeyFunc, a negative WithWait or a WithBusyCode that is not
// an error code is a setup error: the interceptor does not panic, but every
// call fails with Internal "lock misconfigured" and the error, wrapping
// mutex.ErrInvalid, is passed to the WithErrorHook hook.
func UnaryServerInterceptor(l mutex.Locker, key KeyFunc, opts ...Option) grpc.UnaryServerInterceptor {
	c := newConfig(l, key, opts)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		var resp any
		err := c.serialize(ctx, info.FullMethod, req, func(ctx context.Context) error {
			var err error
			resp, err = handler(ctx, req)
			return err
		})
		return resp, err
	}
}

// StreamServerInterceptor returns an interceptor that serializes streams by
// key like UnaryServerInterceptor does unary calls. The lock is held from
// before the handler starts until it returns. The KeyFunc gets a nil req:
// take the key from the metadata ([Metadata]) or the method.
func StreamServerInterceptor(l mutex.Locker, key KeyFunc, opts ...Option) grpc.StreamServerInterceptor {
	c := newConfig(l, key, opts)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return c.serialize(ss.Context(), info.FullMethod, nil, func(ctx context.Context) error {
			if ctx == ss.Context() {
				return handler(srv, ss)
			}
			return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
		})
	}
}

// serverStream is a ServerStream with the context of the lock.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// serialize runs call under the lock of the call's key and returns the
// status error the client gets.
func (c *config) serialize(ctx context.Context, fullMethod string, req any, call func(context.Context) error) error {
	if c.err != nil {
		return c.reject(ctx, fullMethod, c.err)
	}
	for _, skip := range c.skips {
		if skip(fullMethod) {
			return call(ctx)
		}
	}
	key, ok, err := c.key(ctx, fullMethod, req)
	var setup *serialize.SetupError
	switch {
	case errors.As(err, &setup):
		return c.reject(ctx, fullMethod, err)
	case err != nil:
		if !errors.Is(err, ErrMissingKey) && !errors.Is(err, ErrInvalidKey) {
			err = fmt.Errorf("%w: %w", ErrInvalidKey, err)
		}
		return c.reject(ctx, fullMethod, err)
	case !ok:
		return call(ctx)
	}
	if err := validateKey(key); err != nil {
		return c.reject(ctx, fullMethod, err)
	}

	if lease, ok := mutex.HeldLease(ctx, c.locker, key); ok {
		// An enclosing interceptor or WithLock holds the key already.
		return call(mutex.ContextWithLease(ctx, c.locker, lease))
	}
	lease, err := c.acquire(ctx, key)
	if err != nil {
		if c.failOpen && errors.Is(err, ErrUnavailable) {
			c.report(ctx, fullMethod, err)
			return call(ctx)
		}
		return c.reject(ctx, fullMethod, err)
	}
	var callErr error
	ran := false
	// The handler's error goes back to the client as it is; RunLocked then
	// returns only errors of the lock: a lost lease, a failed release.
	err = mutex.RunLocked(ctx, c.locker, lease, func(ctx context.Context) error {
		ran = true
		callErr = call(ctx)
		return nil
	})
	switch {
	case !ran:
		// The lease ended between its grant and the start of the handler:
		// Redis lost the key or did not answer in time.
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		if c.failOpen {
			c.report(ctx, fullMethod, err)
			return call(ctx)
		}
		return c.reject(ctx, fullMethod, err)
	case err != nil:
		c.report(ctx, fullMethod, err)
	}
	return callErr
}

// acquire obtains the lease on key and classifies the errors.
func (c *config) acquire(ctx context.Context, key string) (mutex.Lease, error) {
	lease, unavailable, err := serialize.Acquire(ctx, c.locker, key, c.wait)
	if unavailable {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return lease, err
}

func (c *config) report(ctx context.Context, fullMethod string, err error) {
	if c.hook != nil {
		c.hook(ctx, fullMethod, err)
	}
}

// reject reports err and returns the status error the client gets.
func (c *config) reject(ctx context.Context, fullMethod string, err error) error {
	c.report(ctx, fullMethod, err)
	var parse *ParseError
	switch {
	case errors.Is(err, ErrMissingKey):
		return status.Error(codes.InvalidArgument, "missing lock key")
	case errors.As(err, &parse):
		return status.Error(codes.InvalidArgument, "invalid lock key in request")
	case errors.Is(err, ErrInvalidKey):
		return status.Error(codes.InvalidArgument, "invalid lock key")
	case errors.Is(err, mutex.ErrNotObtained):
		switch ctx.Err() {
		case context.DeadlineExceeded:
			return status.Error(codes.DeadlineExceeded, "deadline exceeded while waiting for the lock")
		case context.Canceled:
			return status.Error(codes.Canceled, "cancelled while waiting for the lock")
		}
		return busyStatus(c.busyCode, err)
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, "lock service unavailable")
	}
	return status.Error(codes.Internal, "lock misconfigured")
}

// busyStatus returns the busy status, with a RetryInfo detail carrying the
// holder's remaining lease time when it is known.
func busyStatus(code codes.Code, err error) error {
	st := status.New(code, "resource busy")
	var ne *mutex.NotObtainedError
	if errors.As(err, &ne) && ne.RetryAfter > 0 {
		d := ne.RetryAfter.Round(time.Millisecond)
		if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); err == nil {
			st = withInfo
		}
	}
	return st.Err()
}
