package middleware

import (
	"context"
	"fmt"

	"github.com/distlock/distlock/mutex"
)

// Middleware decorates a Locker with another behaviour. The Locker it
// returns passes contexts on unchanged, and its leases implement
// mutex.Unwrapper when they wrap the leases of the decorated Locker.
type Middleware func(mutex.Locker) mutex.Locker

// Chain wraps l in ms so that the first middleware is the outermost:
// Chain(l, A, B, C) is A(B(C(l))). A call goes through A first and reaches
// l last. A nil middleware gives a Locker whose every call fails with an
// error wrapping mutex.ErrInvalid.
func Chain(l mutex.Locker, ms ...Middleware) mutex.Locker {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i] == nil {
			return invalidLocker{fmt.Errorf("%w: nil middleware at %d in chain", mutex.ErrInvalid, i)}
		}
		l = ms[i](l)
	}
	return l
}

// invalidLocker fails every call with err.
type invalidLocker struct{ err error }

func (x invalidLocker) Lock(context.Context, ...string) (mutex.Lease, error)    { return nil, x.err }
func (x invalidLocker) TryLock(context.Context, ...string) (mutex.Lease, error) { return nil, x.err }
func (x invalidLocker) Check(context.Context, ...string) (mutex.Status, error) {
	return mutex.Available, x.err
}
