package grpcmw

import (
	"context"
	"fmt"

	"google.golang.org/grpc/metadata"

	"github.com/distlock/distlock/internal/serialize"
)

// MaxKeyLen is the longest key, in bytes, that the interceptors accept from
// a KeyFunc, namespace included. It is well below mutex.MaxKeyLen so that a
// client cannot make the interceptor store large keys in Redis.
const MaxKeyLen = 256

// KeyFunc returns the lock key of a call. ok == false lets the call run
// without a lock. An empty key with ok == true, or an error wrapping
// ErrMissingKey, gives InvalidArgument "missing lock key"; any other error
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
