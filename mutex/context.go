package mutex

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
)

// ErrReentrant reports a Lock or TryLock for a key that the calling context
// already holds through a lease of the same Mutex (see ContextWithLease).
// Waiting would only end when the held lease expires, so the call fails at
// once instead.
var ErrReentrant = errors.New("mutex: key already held by this context")

type heldKey struct{}

// held is one link of the chain of leases recorded in a context.
type held struct {
	locker Locker
	lease  Lease
	parent *held
}

// ContextWithLease returns a copy of ctx recording that code running with it
// holds lease, obtained from l. WithLock and the HTTP and gRPC middleware
// record their leases this way, so that code under them that locks the same
// key again through the same Locker joins the held lease (WithLock) or gets
// ErrReentrant (Lock, TryLock) instead of waiting for itself.
func ContextWithLease(ctx context.Context, l Locker, lease Lease) context.Context {
	parent, _ := ctx.Value(heldKey{}).(*held)
	return context.WithValue(ctx, heldKey{}, &held{locker: l, lease: lease, parent: parent})
}

// LeaseFromContext returns the innermost lease recorded in ctx by
// ContextWithLease, or nil.
func LeaseFromContext(ctx context.Context) Lease {
	if h, _ := ctx.Value(heldKey{}).(*held); h != nil {
		return h.lease
	}
	return nil
}

// HeldLease returns the innermost lease recorded in ctx that was obtained
// from l, holds every one of keys and has not ended.
//
// The lease was obtained from l if it was recorded with a Locker equal to l
// by ==. A Locker whose value cannot be compared, such as a struct value
// holding a slice, a map or a func, is never equal to another one, not even
// to a copy of itself: HeldLease does not find the leases recorded with it,
// so WithLock under them locks again (and fails with ErrReentrant when the
// Mutex behind it already holds the keys for ctx). Pass a pointer to such a
// Locker for nested WithLock calls to join its leases.
func HeldLease(ctx context.Context, l Locker, keys ...string) (Lease, bool) {
	for h, _ := ctx.Value(heldKey{}).(*held); h != nil; h = h.parent {
		if !sameLocker(h.locker, l) || h.lease.Err() != nil {
			continue
		}
		held := h.lease.Keys()
		if containsAll(held, keys) {
			return h.lease, true
		}
	}
	return nil, false
}

// sameLocker reports whether a and b are equal by ==, without the panic of
// == on two values of one type that cannot be compared: those are never
// equal.
func sameLocker(a, b Locker) bool {
	ta := reflect.TypeOf(a)
	if ta != reflect.TypeOf(b) {
		return false
	}
	if ta == nil {
		return true
	}
	return isComparable(a) && isComparable(b) && a == b
}

func containsAll(held, keys []string) bool {
	for _, k := range keys {
		if !slices.Contains(held, k) {
			return false
		}
	}
	return true
}

// Unwrapper is implemented by leases that decorate another lease, so that
// the Mutex can recognise its own leases behind decorators.
type Unwrapper interface {
	Unwrap() Lease
}

// ownLease returns the lease of m behind l's decorators, or nil.
func (m *Mutex) ownLease(l Lease) *lease {
	if own := coreLease(l); own != nil && own.m == m {
		return own
	}
	return nil
}

// checkReentrant fails with ErrReentrant if ctx holds a live lease of m on
// one of keys.
func (m *Mutex) checkReentrant(ctx context.Context, keys []string) error {
	for h, _ := ctx.Value(heldKey{}).(*held); h != nil; h = h.parent {
		l := m.ownLease(h.lease)
		if l == nil || l.Err() != nil {
			continue
		}
		for _, k := range keys {
			if slices.Contains(l.keys, k) {
				return fmt.Errorf("%w: %q", ErrReentrant, k)
			}
		}
	}
	return nil
}
