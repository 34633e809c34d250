package mutex_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// wwSetup returns two Mutexes, each on its own client of b, sharing a key
// prefix unique to the test, and that prefix.
func wwSetup(t *testing.T, b redistest.Backend, ttl time.Duration) (m, other *mutex.Mutex, p string) {
	t.Helper()
	p = prefix(t)
	cfg := mutex.Config{Prefix: p, TTL: ttl}
	return backendMutex(t, b, cfg), backendMutex(t, b, cfg), p
}

// TestWithLockWaitWorkOutlivesWait runs a function for several TTLs, far
// longer than the wait: it keeps the lock all along, its context is not
// cancelled, and it carries no deadline of the wait.
func TestWithLockWaitWorkOutlivesWait(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		const ttl = 600 * time.Millisecond
		m, other, p := wwSetup(t, backend, ttl)
		// Connected (and, on a cluster, with the slot map loaded) before the
		// short wait starts.
		_, err := m.Check(t.Context(), "k")
		require.NoError(t, err)
		err = mutex.WithLockWait(t.Context(), m, 200*time.Millisecond, "k", func(ctx context.Context) error {
			_, hasDeadline := ctx.Deadline()
			assert.False(t, hasDeadline, "the wait's deadline reached the function")
			lease := mutex.LeaseFromContext(ctx)
			require.NotNil(t, lease)
			assert.Equal(t, []string{"k"}, lease.Keys())
			start := time.Now()
			for time.Since(start) < 3*ttl {
				_, err := other.TryLock(ctx, "k")
				require.ErrorIs(t, err, mutex.ErrNotObtained)
				require.NoError(t, ctx.Err())
				time.Sleep(25 * time.Millisecond)
			}
			return nil
		})
		require.NoError(t, err)
		assert.Empty(t, keysLeft(t, backend.Client(t), p), "unlocked after the function")
	})
}

// TestWithLockWaitKeepsCallerDeadline checks that the function runs under
// the caller's context: its deadline is the caller's, not the wait's.
func TestWithLockWaitKeepsCallerDeadline(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, _ := wwSetup(t, backend, 0)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		want, _ := ctx.Deadline()
		err := mutex.WithLockWait(ctx, m, 100*time.Millisecond, "k", func(ctx context.Context) error {
			got, ok := ctx.Deadline()
			require.True(t, ok)
			assert.Equal(t, want, got)
			return nil
		})
		require.NoError(t, err)
	})
}

// TestWithLockWaitGivesUp checks that a held key ends the wait after wait,
// with an error that names the key and tells a spent wait from the end of
// the caller's context.
func TestWithLockWaitGivesUp(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, _ := wwSetup(t, backend, 0)
		held, err := other.TryLock(t.Context(), "k")
		require.NoError(t, err)
		t.Cleanup(func() { held.Unlock(context.Background()) })

		const wait = 150 * time.Millisecond
		start := time.Now()
		err = mutex.WithLockWait(t.Context(), m, wait, "k", func(context.Context) error {
			t.Error("the function ran without the lock")
			return nil
		})
		took := time.Since(start)
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NoError(t, t.Context().Err())
		var ne *mutex.NotObtainedError
		require.ErrorAs(t, err, &ne)
		assert.Equal(t, "k", ne.Key)
		assert.Positive(t, ne.RetryAfter)
		assert.GreaterOrEqual(t, took, wait)
		assert.Less(t, took, wait+5*time.Second)
	})
}

// TestWithLockWaitGetsKeyReleasedInTime checks that a key released within
// the wait is taken.
func TestWithLockWaitGetsKeyReleasedInTime(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, _ := wwSetup(t, backend, 0)
		held, err := other.TryLock(t.Context(), "k")
		require.NoError(t, err)
		released := make(chan error, 1)
		time.AfterFunc(100*time.Millisecond, func() { released <- held.Unlock(context.Background()) })

		ran := false
		err = mutex.WithLockWait(t.Context(), m, time.Minute, "k", func(context.Context) error {
			ran = true
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, <-released)
		assert.True(t, ran)
	})
}

// TestWithLockWaitZero checks that a zero wait makes one attempt.
func TestWithLockWaitZero(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, p := wwSetup(t, backend, 0)
		var runs atomic.Int32
		fn := func(context.Context) error {
			runs.Add(1)
			return nil
		}
		require.NoError(t, mutex.WithLockWait(t.Context(), m, 0, "k", fn))
		assert.Equal(t, int32(1), runs.Load())
		assert.Empty(t, keysLeft(t, backend.Client(t), p))

		held, err := other.TryLock(t.Context(), "k")
		require.NoError(t, err)
		t.Cleanup(func() { held.Unlock(context.Background()) })
		err = mutex.WithLockWait(t.Context(), m, 0, "k", fn)
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.NotErrorIs(t, err, context.DeadlineExceeded, "one attempt, no wait")
		var ne *mutex.NotObtainedError
		require.ErrorAs(t, err, &ne)
		assert.Equal(t, "k", ne.Key)
		assert.Equal(t, int32(1), runs.Load())
	})
}

// TestWithLockWaitCallerEndsFirst checks that the caller's context still
// ends the wait.
func TestWithLockWaitCallerEndsFirst(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, _ := wwSetup(t, backend, 0)
		held, err := other.TryLock(t.Context(), "k")
		require.NoError(t, err)
		t.Cleanup(func() { held.Unlock(context.Background()) })

		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		err = mutex.WithLockWait(ctx, m, time.Minute, "k", func(context.Context) error {
			t.Error("the function ran without the lock")
			return nil
		})
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.ErrorIs(t, err, context.Canceled)
	})
}

// TestWithLockWaitReentrancy checks that a context holding the key joins
// its lease at once.
func TestWithLockWaitReentrancy(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, p := wwSetup(t, backend, 0)
		err := mutex.WithLock(t.Context(), m, "k", func(ctx context.Context) error {
			outer := mutex.LeaseFromContext(ctx)
			for _, wait := range []time.Duration{0, time.Minute} {
				ran := false
				err := mutex.WithLockWait(ctx, m, wait, "k", func(inner context.Context) error {
					ran = true
					assert.Same(t, outer, mutex.LeaseFromContext(inner))
					return nil
				})
				require.NoError(t, err)
				assert.True(t, ran)
				require.NoError(t, outer.Err(), "the inner call did not unlock")
			}
			return nil
		})
		require.NoError(t, err)
		assert.Empty(t, keysLeft(t, backend.Client(t), p))
	})
}

// TestWithLockWaitReturnsFnError checks that fn's error comes back as it
// is, the key released.
func TestWithLockWaitReturnsFnError(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, p := wwSetup(t, backend, 0)
		want := errors.New("fn failed")
		err := mutex.WithLockWait(t.Context(), m, time.Second, "k", func(context.Context) error { return want })
		require.ErrorIs(t, err, want)
		assert.Empty(t, keysLeft(t, backend.Client(t), p))
	})
}

func TestWithLockWaitBadInput(t *testing.T) {
	srv := redistest.Shared(t)
	m := newMutex(t, srv, mutex.Config{Prefix: prefix(t)})
	ctx := t.Context()
	fn := func(context.Context) error {
		t.Error("the function ran")
		return nil
	}
	for _, err := range []error{
		mutex.WithLockWait(ctx, nil, time.Second, "k", fn),
		mutex.WithLockWait(ctx, m, time.Second, "k", nil),
		mutex.WithLockWait(ctx, m, time.Second, "", fn),
		mutex.WithLockWait(ctx, m, -time.Second, "k", fn),
	} {
		require.ErrorIs(t, err, mutex.ErrInvalid)
	}
	require.EqualError(t, mutex.WithLockWait(ctx, m, -time.Second, "k", fn),
		"mutex: invalid argument: negative wait -1s for WithLockWait")
	require.EqualError(t, mutex.WithLockWait(ctx, nil, time.Second, "k", fn),
		"mutex: invalid argument: nil Locker for WithLockWait")
}
