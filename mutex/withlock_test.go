package mutex_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// wlSetup returns two Mutexes, each on its own client of b, with a key
// prefix unique to the test, and their Config.
func wlSetup(t *testing.T, b redistest.Backend, ttl time.Duration) (m, other *mutex.Mutex, cfg mutex.Config) {
	t.Helper()
	cfg = mutex.Config{
		Prefix: "wl:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name()),
		TTL:    ttl,
	}
	for _, p := range []**mutex.Mutex{&m, &other} {
		*p = backendMutex(t, b, cfg)
	}
	return m, other, cfg
}

// wlKeys returns the Redis keys of the Mutexes of cfg, on every primary of
// a cluster.
func wlKeys(t *testing.T, c redis.UniversalClient, cfg mutex.Config) []string {
	t.Helper()
	return keysLeft(t, c, cfg.Prefix)
}

func TestWithLockRunsUnderLock(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, cfg := wlSetup(t, backend, 0)
		ctx := t.Context()
		want := errors.New("fn failed")
		err := mutex.WithLock(ctx, m, "k", func(ctx context.Context) error {
			st, err := other.Check(ctx, "k")
			require.NoError(t, err)
			assert.Equal(t, mutex.Locked, st)
			_, err = other.TryLock(ctx, "k")
			require.ErrorIs(t, err, mutex.ErrNotObtained)
			lease := mutex.LeaseFromContext(ctx)
			require.NotNil(t, lease)
			assert.Equal(t, []string{"k"}, lease.Keys())
			return want
		})
		require.ErrorIs(t, err, want)
		assert.Empty(t, wlKeys(t, backend.Client(t), cfg), "unlocked after fn")

		err = mutex.WithLockMany(ctx, m, []string{"a", "b"}, func(ctx context.Context) error {
			st, err := other.Check(ctx, "a", "b")
			require.NoError(t, err)
			assert.Equal(t, mutex.Locked, st)
			return nil
		})
		require.NoError(t, err)
		assert.Empty(t, wlKeys(t, backend.Client(t), cfg))
	})
}

func TestWithLockExtendsWhileRunning(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ttl := time.Second
		m, other, cfg := wlSetup(t, backend, ttl)
		err := mutex.WithLock(t.Context(), m, "k", func(ctx context.Context) error {
			start := time.Now()
			// Keep checking past two TTLs that nobody else can lock.
			for time.Since(start) < 2*ttl+ttl/2 {
				_, err := other.TryLock(ctx, "k")
				require.ErrorIs(t, err, mutex.ErrNotObtained)
				require.NoError(t, ctx.Err())
				time.Sleep(20 * time.Millisecond)
			}
			return nil
		})
		require.NoError(t, err)
		assert.Empty(t, wlKeys(t, backend.Client(t), cfg))
	})
}

func TestWithLockCancelsOnLoss(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, cfg := wlSetup(t, backend, 600*time.Millisecond)
		direct := backend.Client(t)
		err := mutex.WithLock(t.Context(), m, "k", func(ctx context.Context) error {
			keys := wlKeys(t, direct, cfg)
			require.Len(t, keys, 1)
			// Another owner takes the key; the next extension finds out.
			require.NoError(t, direct.Set(context.Background(), keys[0], "intruder:1", time.Minute).Err())
			<-ctx.Done()
			cause := context.Cause(ctx)
			require.ErrorIs(t, cause, mutex.ErrNotHeld)
			return ctx.Err()
		})
		require.ErrorIs(t, err, context.Canceled, "fn's error")
		require.ErrorIs(t, err, mutex.ErrNotHeld, "the unlock error tells the lock was lost")
		keys := wlKeys(t, direct, cfg)
		require.Len(t, keys, 1)
		v, gerr := direct.Get(context.Background(), keys[0]).Result()
		require.NoError(t, gerr)
		assert.Equal(t, "intruder:1", v, "the other owner's key is left alone")
		require.NoError(t, direct.Del(context.Background(), keys[0]).Err())
	})
}

func TestWithLockPanics(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, cfg := wlSetup(t, backend, 0)
		func() {
			defer func() {
				assert.Equal(t, "boom", recover())
			}()
			_ = mutex.WithLock(t.Context(), m, "k", func(ctx context.Context) error {
				panic("boom")
			})
			t.Error("the panic did not propagate")
		}()
		assert.Empty(t, wlKeys(t, backend.Client(t), cfg), "unlocked despite the panic")
		lease, err := other.TryLock(t.Context(), "k")
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(t.Context()))
	})
}

func TestWithLockUnlocksAfterCallerCancels(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, cfg := wlSetup(t, backend, 0)
		ctx, cancel := context.WithCancel(t.Context())
		err := mutex.WithLock(ctx, m, "k", func(ctx context.Context) error {
			cancel()
			<-ctx.Done()
			assert.ErrorIs(t, context.Cause(ctx), context.Canceled)
			return ctx.Err()
		})
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, mutex.ErrNotHeld)
		assert.Empty(t, wlKeys(t, backend.Client(t), cfg), "unlocked with a context of its own")
	})
}

func TestWithLockReentrancy(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, cfg := wlSetup(t, backend, 0)
		ctx := t.Context()
		ran := false
		err := mutex.WithLock(ctx, m, "k", func(ctx context.Context) error {
			outer := mutex.LeaseFromContext(ctx)
			// Same key, same Locker: joins the held lease.
			err := mutex.WithLock(ctx, m, "k", func(inner context.Context) error {
				ran = true
				assert.Same(t, outer, mutex.LeaseFromContext(inner))
				return nil
			})
			require.NoError(t, err)
			require.NoError(t, outer.Err(), "the inner WithLock did not unlock")

			// A direct Lock fails at once instead of waiting for itself.
			_, err = m.Lock(ctx, "k")
			require.ErrorIs(t, err, mutex.ErrReentrant)
			// Held and free keys together: no join, and no self-wait.
			err = mutex.WithLockMany(ctx, m, []string{"k", "j"}, func(context.Context) error {
				t.Error("fn ran")
				return nil
			})
			require.ErrorIs(t, err, mutex.ErrReentrant)
			// Another key nests normally.
			err = mutex.WithLock(ctx, m, "j", func(ctx context.Context) error {
				st, err := other.Check(ctx, "k", "j")
				require.NoError(t, err)
				assert.Equal(t, mutex.Locked, st)
				return nil
			})
			require.NoError(t, err)
			// Another Locker is another owner: it waits (here, times out).
			short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			err = mutex.WithLock(short, other, "k", func(context.Context) error {
				t.Error("fn ran")
				return nil
			})
			require.ErrorIs(t, err, mutex.ErrNotObtained)
			return nil
		})
		require.NoError(t, err)
		assert.True(t, ran)
		assert.Empty(t, wlKeys(t, backend.Client(t), cfg))
	})
}

func TestWithLockBadInput(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, _ := wlSetup(t, backend, 0)
		ctx := t.Context()
		fn := func(context.Context) error { return nil }
		for _, err := range []error{
			mutex.WithLock(ctx, nil, "k", fn),
			mutex.WithLock(ctx, m, "k", nil),
			mutex.WithLock(ctx, m, "", fn),
			mutex.WithLockMany(ctx, m, nil, fn),
			mutex.RunLocked(ctx, nil, nil, fn),
			mutex.RunLocked(ctx, m, nil, fn),
		} {
			require.ErrorIs(t, err, mutex.ErrInvalid)
		}
		lease, err := m.TryLock(ctx, "k")
		require.NoError(t, err)
		require.ErrorIs(t, mutex.RunLocked(ctx, m, lease, nil), mutex.ErrInvalid)
		require.NoError(t, lease.Unlock(ctx))
	})
}

func TestRunLockedEndedLease(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, _ := wlSetup(t, backend, 0)
		lease, err := m.TryLock(t.Context(), "k")
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(t.Context()))
		err = mutex.RunLocked(t.Context(), m, lease, func(context.Context) error {
			t.Error("fn ran")
			return nil
		})
		require.ErrorIs(t, err, mutex.ErrReleased)
	})
}

// flagged is a lease that claims to be extended in the background, and
// counts the Extend calls made on it.
type flagged struct {
	mutex.Lease
	extends atomic.Int32
	failing atomic.Int32 // Extend calls left to fail with a Redis-like error
}

func (f *flagged) AutoExtended() bool { return true }

func (f *flagged) Extend(ctx context.Context) error {
	f.extends.Add(1)
	if f.failing.Add(-1) >= 0 {
		return errors.New("connection reset by peer")
	}
	return f.Lease.Extend(ctx)
}

func (f *flagged) Unwrap() mutex.Lease { return f.Lease }

// plain hides AutoExtended from a flagged lease.
type plain struct{ *flagged }

func (p plain) AutoExtended() bool { return false }

func TestRunLockedWatchesAutoExtendedLeases(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, _ := wlSetup(t, backend, 300*time.Millisecond)
		lease, err := m.TryLock(t.Context(), "k")
		require.NoError(t, err)
		f := &flagged{Lease: lease}
		err = mutex.RunLocked(t.Context(), m, f, func(ctx context.Context) error {
			// Nobody extends the lease: it runs out and fn is told.
			<-ctx.Done()
			require.ErrorIs(t, context.Cause(ctx), mutex.ErrNotHeld)
			return nil
		})
		require.ErrorIs(t, err, mutex.ErrNotHeld)
		assert.Zero(t, f.extends.Load(), "an auto-extended lease is not extended again")
	})
}

func TestRunLockedRetriesFailedExtensions(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ttl := time.Second
		m, other, _ := wlSetup(t, backend, ttl)
		lease, err := m.TryLock(t.Context(), "k")
		require.NoError(t, err)
		f := &flagged{Lease: lease}
		f.failing.Store(2)
		err = mutex.RunLocked(t.Context(), m, plain{f}, func(ctx context.Context) error {
			// Two failures, then extensions that work, past two TTLs.
			for f.extends.Load() < 6 {
				require.NoError(t, ctx.Err())
				time.Sleep(10 * time.Millisecond)
			}
			_, err := other.TryLock(ctx, "k")
			require.ErrorIs(t, err, mutex.ErrNotObtained)
			return nil
		})
		require.NoError(t, err)
	})
}

// opaqueLease hides the Deadline of the lease it wraps.
type opaqueLease struct {
	mutex.Lease
	extends chan time.Time
}

func (o opaqueLease) Extend(ctx context.Context) error {
	select {
	case o.extends <- time.Now():
	default:
	}
	return o.Lease.Extend(ctx)
}

func TestRunLockedFallbackInterval(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, _ := wlSetup(t, backend, 5*time.Second)
		lease, err := m.TryLock(t.Context(), "k")
		require.NoError(t, err)
		o := opaqueLease{Lease: lease, extends: make(chan time.Time, 1)}
		start := time.Now()
		err = mutex.RunLocked(t.Context(), m, o, func(ctx context.Context) error {
			at := <-o.extends
			assert.GreaterOrEqual(t, at.Sub(start), mutex.FallbackExtendInterval)
			return nil
		})
		require.NoError(t, err)
	})
}

// TestRunLockedErrorText checks that only the sentinel carries the package
// prefix: bad input reads "mutex: invalid argument: <detail>", and the
// cause of a lost lease adds only "lease lost".
func TestRunLockedErrorText(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, cfg := wlSetup(t, backend, 600*time.Millisecond)
		fn := func(context.Context) error { return nil }
		require.EqualError(t, mutex.WithLock(t.Context(), nil, "k", fn), "mutex: invalid argument: nil Locker for WithLock")
		require.EqualError(t, mutex.RunLocked(t.Context(), m, nil, fn), "mutex: invalid argument: nil Lease for RunLocked")

		direct := backend.Client(t)
		err := mutex.WithLock(t.Context(), m, "k", func(ctx context.Context) error {
			keys := wlKeys(t, direct, cfg)
			require.Len(t, keys, 1)
			require.NoError(t, direct.Set(context.Background(), keys[0], "intruder:1", time.Minute).Err())
			<-ctx.Done()
			cause := context.Cause(ctx)
			require.ErrorIs(t, cause, mutex.ErrNotHeld)
			msg := cause.Error()
			assert.True(t, strings.HasPrefix(msg, "lease lost: mutex: lock not held: "), "%s", msg)
			assert.Equal(t, 1, strings.Count(msg, "mutex:"), "%s", msg)
			return nil
		})
		require.ErrorIs(t, err, mutex.ErrNotHeld)
		keys := wlKeys(t, direct, cfg)
		require.Len(t, keys, 1)
		require.NoError(t, direct.Del(context.Background(), keys...).Err())

		lease, err := m.TryLock(t.Context(), "k")
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(t.Context()))
		require.EqualError(t, mutex.RunLocked(t.Context(), m, lease, fn), "run locked: mutex: lease released")
	})
}
