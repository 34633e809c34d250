package grpcmw

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/metadata"

	"github.com/distlock/distlock/internal/serialize"
	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
)

// MaxKeyLen is the longest key, in bytes, that the interceptors accept from
// a KeyFunc, namespace included. It is well below mutex.MaxKeyLen so that a
// client cannot make the interceptor store large keys in Redis.
const MaxKeyLen = 256

// KeyFunc returns the lock key of a call. ok == false lets the call run
// without a lock. An empty key with ok == true, or an error wrapping
// ErrMissingKey, gives InvalidArgument "missing lock key"; a *ParseError
// gives InvalidArgument "invalid lock key in request"; any other error
// gives InvalidArgument "invalid lock key". req is the request message of a
// unary call and nil for a stream. The key is validated after the KeyFunc
// returns.
type KeyFunc func(ctx context.Context, fullMethod string, req any) (key string, ok bool, err error)

// FromRequest returns a KeyFunc that takes the key from requests of type T
// with key, and lets every other call (other request types, and streams)
// run without a lock.
func FromRequest[T any](key func(req T) string) KeyFunc {
	return func(_ context.Context, _ string, req any) (string, bool, error) {
		r, ok := req.(T)
		if !ok || key == nil {
			return "", false, nil
		}
		return key(r), true, nil
	}
}

// KeyedFromRequest returns a KeyFunc that takes a K from requests of type T
// with key and locks the key that k gives it, k.Key(v): the lock that
// k.Lock(ctx, v) takes. Every other call (other request types, and
// streams) runs without a lock, as with FromRequest. Requests whose values
// parse to the same K lock the same resource: with a key function built on
// strconv.ParseInt, accounts "042" and "42" wait for each other. The key
// carries k's namespace: do not wrap the KeyFunc in Namespace.
//
// An error from key, or a K that k refuses (an empty key string, a key
// longer than MaxKeyLen bytes with its namespace, not valid UTF-8 or holding
// control characters), fails the call with InvalidArgument "invalid lock key
// in request", and the error is a *ParseError. key should return an error
// wrapping ErrMissingKey for a request without a value, which fails with
// InvalidArgument "missing lock key".
//
// A nil key function, or a k that is nil or reports an error from Err, is
// a setup error: every call of type T fails with Internal "lock
// misconfigured", and the error, wrapping mutex.ErrInvalid, goes to the
// WithErrorHook hook.
//
// Give the interceptor the Locker that k was made with: a handler that
// locks the same value through k (k.WithLock) then joins the call's lease,
// where another Locker over the same Mutex would fail with
// mutex.ErrReentrant.
func KeyedFromRequest[T any, K comparable](k *keyed.Keyed[K], key func(req T) (K, error)) KeyFunc {
	var setup error
	switch {
	case k.Err() != nil:
		setup = fmt.Errorf("keyed request key: %w", k.Err())
	case key == nil:
		setup = fmt.Errorf("%w: nil key function for keyed request key", mutex.ErrInvalid)
	}
	return func(_ context.Context, _ string, req any) (string, bool, error) {
		r, ok := req.(T)
		if !ok {
			return "", false, nil
		}
		if setup != nil {
			return "", true, &serialize.SetupError{Err: setup}
		}
		v, err := key(r)
		switch {
		case errors.Is(err, ErrMissingKey):
			return "", true, err
		case err != nil:
			return "", true, &ParseError{Err: err}
		}
		s, err := k.Key(v)
		if err == nil {
			if _, problem := serialize.CheckKey(s, MaxKeyLen); problem != "" {
				err = fmt.Errorf("lock key: %s", problem)
			}
		}
		if err != nil {
			return "", true, &ParseError{Err: err}
		}
		return s, true, nil
	}
}

// Metadata returns a KeyFunc that takes the key from the incoming metadata
// entry name, for unary calls and streams alike. A missing entry gives
// InvalidArgument; an entry given more than once is invalid, so that a
// client cannot make two components of a system read different keys from
// one call.
func Metadata(name string) KeyFunc {
	return func(ctx context.Context, _ string, _ any) (string, bool, error) {
		vs := metadata.ValueFromIncomingContext(ctx, name)
		switch {
		case len(vs) == 0 || len(vs) == 1 && vs[0] == "":
			return "", true, fmt.Errorf("%w: metadata %q", ErrMissingKey, name)
		case len(vs) > 1:
			return "", true, fmt.Errorf("%w: metadata %q given %d times", ErrInvalidKey, name, len(vs))
		}
		return vs[0], true, nil
	}
}

// Namespace returns a KeyFunc that prefixes the key of key with ns and a
// colon, leaving calls that key does not serialize alone.
// Namespace("account", k) locks "account:42" where k returns "42". Give
// each resource a fixed namespace that is not a prefix of another one
// followed by a colon. Namespace of a nil KeyFunc is nil.
func Namespace(ns string, key KeyFunc) KeyFunc {
	if key == nil {
		return nil
	}
	return func(ctx context.Context, fullMethod string, req any) (string, bool, error) {
		k, ok, err := key(ctx, fullMethod, req)
		if err != nil || !ok {
			return "", ok, err
		}
		if k == "" {
			return "", true, fmt.Errorf("%w: in namespace %q", ErrMissingKey, ns)
		}
		return ns + ":" + k, true, nil
	}
}

// validateKey checks a key before it reaches Redis. Its errors name the
// problem but never quote the key, which is untrusted input.
func validateKey(key string) error {
	missing, problem := serialize.CheckKey(key, MaxKeyLen)
	switch {
	case missing:
		return ErrMissingKey
	case problem != "":
		return fmt.Errorf("%w: %s", ErrInvalidKey, problem)
	}
	return nil
}
