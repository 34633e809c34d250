package mutex_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// taggedLocker is a Locker passed by value that == cannot compare: it holds
// a slice.
type taggedLocker struct {
	tags []string
	m    *mutex.Mutex
}

func (l taggedLocker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	return l.m.Lock(ctx, keys...)
}

func (l taggedLocker) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	return l.m.TryLock(ctx, keys...)
}

func (l taggedLocker) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	return l.m.Check(ctx, keys...)
}

// namedLocker is comparable by its type, but not when its Locker is a
// taggedLocker.
type namedLocker struct {
	name string
	mutex.Locker
}

func TestHeldLeaseUncomparableLocker(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{Prefix: prefix(t)})
		ctx := t.Context()
		tagged := taggedLocker{tags: []string{"a"}, m: m}
		named := namedLocker{name: "n", Locker: tagged}
		for _, tt := range []struct {
			value, pointer mutex.Locker
		}{
			{tagged, &tagged},
			{named, &named},
		} {
			lease, err := tt.value.Lock(ctx, "k")
			require.NoError(t, err)
			held := mutex.ContextWithLease(ctx, tt.value, lease)
			_, ok := mutex.HeldLease(held, tt.value, "k")
			assert.False(t, ok, "%T: a Locker that cannot be compared matches no lease", tt.value)
			_, ok = mutex.HeldLease(held, m, "k")
			assert.False(t, ok, "%T: another Locker matches no lease", tt.value)

			// Through a pointer, the same Locker finds its lease.
			held = mutex.ContextWithLease(ctx, tt.pointer, lease)
			got, ok := mutex.HeldLease(held, tt.pointer, "k")
			assert.True(t, ok, "%T", tt.pointer)
			assert.Equal(t, lease, got)
			_, ok = mutex.HeldLease(held, tt.value, "k")
			assert.False(t, ok, "%T: the value does not match the pointer's lease", tt.value)
			require.NoError(t, lease.Unlock(ctx))
		}
	})
}

func TestWithLockNestedUncomparableLocker(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{Prefix: prefix(t)})
		ctx := t.Context()
		l := taggedLocker{tags: []string{"a", "b"}, m: m}

		ran := false
		err := mutex.WithLock(ctx, l, "k", func(ctx context.Context) error {
			// The nested WithLock cannot tell it holds the key: it locks
			// again, and the Mutex refuses at once instead of waiting for
			// itself.
			err := mutex.WithLock(ctx, l, "k", func(context.Context) error {
				return errors.New("nested function ran")
			})
			if !errors.Is(err, mutex.ErrReentrant) {
				return err
			}
			// Other keys lock as usual.
			return mutex.WithLock(ctx, l, "j", func(context.Context) error {
				ran = true
				return nil
			})
		})
		require.NoError(t, err)
		assert.True(t, ran)

		// Through a pointer, the nested WithLock joins the held lease.
		p := &l
		err = mutex.WithLock(ctx, p, "k", func(ctx context.Context) error {
			outer := mutex.LeaseFromContext(ctx)
			return mutex.WithLock(ctx, p, "k", func(ctx context.Context) error {
				if mutex.LeaseFromContext(ctx) != outer {
					return errors.New("the nested WithLock did not join the held lease")
				}
				return nil
			})
		})
		require.NoError(t, err)

		st, err := m.Check(ctx, "k", "j")
		require.NoError(t, err)
		assert.Equal(t, mutex.Available, st)
	})
}
