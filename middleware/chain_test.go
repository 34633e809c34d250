package middleware_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

func TestChainOrder(t *testing.T) {
	m := newMutex(t, redistest.Shared(t).Client(t), mutex.Config{Prefix: prefix(t)})
	var order []string
	named := func(name string) middleware.Middleware {
		return func(next mutex.Locker) mutex.Locker {
			_, mw := record(func(int) error {
				order = append(order, name)
				return nil
			})
			return mw(next)
		}
	}
	l := middleware.Chain(m, named("A"), named("B"), named("C"))
	_, err := l.Check(t.Context(), "k")
	require.NoError(t, err)
	assert.Equal(t, []string{"A", "B", "C"}, order, "Chain(m, A, B, C) is A(B(C(m)))")
}

// TestReentrancyThroughChain checks that code holding a key through a
// decorated Locker joins its lease with WithLock, and gets ErrReentrant at
// once, without retries, from Lock.
func TestReentrancyThroughChain(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := newMutex(t, backend.Client(t), mutex.Config{Prefix: prefix(t), TTL: time.Minute})
		rec, inner := record(nil)
		s := newScheduler(t, middleware.SchedulerConfig{})
		l := middleware.Chain(m, middleware.Retry(retryOpts(middleware.WithRetryOnContention(true))...),
			middleware.AutoExtend(middleware.WithScheduler(s)), inner)

		joined := false
		err := mutex.WithLock(t.Context(), l, "k", func(ctx context.Context) error {
			outer := mutex.LeaseFromContext(ctx)
			require.True(t, outer.(mutex.AutoExtender).AutoExtended())
			err := mutex.WithLock(ctx, l, "k", func(ctx context.Context) error {
				joined = true
				assert.Same(t, outer, mutex.LeaseFromContext(ctx))
				return nil
			})
			require.NoError(t, err)
			require.NoError(t, outer.Err())

			calls := rec.count()
			start := time.Now()
			_, err = l.Lock(ctx, "k")
			require.ErrorIs(t, err, mutex.ErrReentrant)
			_, err = l.TryLock(ctx, "k")
			require.ErrorIs(t, err, mutex.ErrReentrant)
			assert.Equal(t, calls+2, rec.count(), "ErrReentrant is not retried")
			assert.Less(t, time.Since(start), 10*time.Second, "no wait for the TTL")
			return nil
		})
		require.NoError(t, err)
		assert.True(t, joined)
		assert.Empty(t, keysLeft(t, backend.Client(t), prefix(t)))
		assert.Equal(t, 0, s.Stats().Leases)
	})
}

func TestChainErrorText(t *testing.T) {
	m := newMutex(t, redistest.Shared(t).Client(t), mutex.Config{Prefix: prefix(t)})
	_, err := middleware.Chain(m, middleware.Retry(), nil).TryLock(t.Context(), "k")
	require.EqualError(t, err, "mutex: invalid argument: nil middleware at 1 in chain")
}
