package mutex_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

func TestMutualExclusionAcrossMutexes(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		var ms []*mutex.Mutex
		for range 4 {
			ms = append(ms, backendMutex(t, backend, cfg))
		}
		const goroutines, rounds = 16, 40
		var (
			inside atomic.Int32
			mu     sync.Mutex
			fences []int64
			wg     sync.WaitGroup
		)
		for g := range goroutines {
			wg.Go(func() {
				m := ms[g%len(ms)]
				for range rounds {
					l, err := m.Lock(t.Context(), "counter")
					if !assert.NoError(t, err) {
						return
					}
					if n := inside.Add(1); n != 1 {
						t.Errorf("%d holders inside the critical section", n)
					}
					mu.Lock()
					fences = append(fences, l.Fence())
					mu.Unlock()
					inside.Add(-1)
					assert.NoError(t, l.Unlock(t.Context()))
				}
			})
		}
		wg.Wait()
		require.Len(t, fences, goroutines*rounds)
		for i := 1; i < len(fences); i++ {
			if fences[i] <= fences[i-1] {
				t.Fatalf("fence %d of grant %d is not above %d of the grant before", fences[i], i, fences[i-1])
			}
		}
		assert.Empty(t, keysLeft(t, backend.Client(t), cfg.Prefix))
	})
}

func TestTryLockContention(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		a, b := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx := t.Context()

		l := must[mutex.Lease](t)(a.TryLock(ctx, "k"))
		_, err := b.TryLock(ctx, "k")
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		var noe *mutex.NotObtainedError
		require.ErrorAs(t, err, &noe)
		assert.Equal(t, "k", noe.Key)
		assert.Greater(t, noe.RetryAfter, time.Duration(0))
		assert.LessOrEqual(t, noe.RetryAfter, 5*time.Second)

		st := must[mutex.Status](t)(b.Check(ctx, "k"))
		assert.Equal(t, mutex.Locked, st)

		require.NoError(t, l.Unlock(ctx))
		assert.Equal(t, mutex.Available, must[mutex.Status](t)(b.Check(ctx, "k")))
		l2 := must[mutex.Lease](t)(b.TryLock(ctx, "k"))
		assert.Greater(t, l2.Fence(), l.Fence())
		require.NoError(t, l2.Unlock(ctx))
	})
}

func TestStaleOwnerCannotUnlockOrExtend(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 100 * time.Millisecond}
		a, b := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx := t.Context()

		old := must[mutex.Lease](t)(a.Lock(ctx, "k"))
		<-old.Done()
		require.ErrorIs(t, old.Err(), mutex.ErrNotHeld)
		// Wait for Redis to expire the key too, then let b take it.
		cur := must[mutex.Lease](t)(b.Lock(ctx, "k"))
		assert.Greater(t, cur.Fence(), old.Fence(), "fence after expiry")

		require.ErrorIs(t, old.Extend(ctx), mutex.ErrNotHeld)
		require.ErrorIs(t, old.Unlock(ctx), mutex.ErrNotHeld)
		require.ErrorIs(t, old.Unlock(ctx), mutex.ErrReleased)
		// The new holder is untouched.
		assert.Equal(t, mutex.Locked, must[mutex.Status](t)(a.Check(ctx, "k")))
		require.NoError(t, cur.Extend(ctx))
		require.NoError(t, cur.Unlock(ctx))
	})
}

func TestTakenLeaseEndsOnExtend(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		m := backendMutex(t, backend, cfg)
		ctx := t.Context()
		c := backend.Client(t)

		l := must[mutex.Lease](t)(m.Lock(ctx, "k"))
		// Someone else takes the key (e.g. after a failover lost it).
		key := keysLeft(t, c, cfg.Prefix)
		require.Len(t, key, 1)
		require.NoError(t, c.Set(ctx, key[0], "intruder:1", 0).Err())

		err := l.Extend(ctx)
		require.ErrorIs(t, err, mutex.ErrNotHeld)
		select {
		case <-l.Done():
		default:
			t.Fatal("Done not closed after a failed Extend")
		}
		require.ErrorIs(t, l.Unlock(ctx), mutex.ErrNotHeld)
		assert.Equal(t, "intruder:1", must[string](t)(c.Get(ctx, key[0]).Result()), "a stale unlock touched the new holder")
		require.NoError(t, c.Del(ctx, key[0]).Err())
	})
}

func TestExpiryClosesDone(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ttl := 200 * time.Millisecond
		m := backendMutex(t, backend, mutex.Config{Prefix: prefix(t), TTL: ttl})
		ctx := t.Context()

		start := time.Now()
		l := must[mutex.Lease](t)(m.Lock(ctx, "k"))
		require.NoError(t, l.Err())
		<-l.Done()
		// Done closes before the key can expire in Redis: at the validity
		// deadline, TTL minus the drift allowance after the attempt started.
		assert.Less(t, time.Since(start), ttl+time.Second)
		require.ErrorIs(t, l.Err(), mutex.ErrNotHeld)
		require.ErrorIs(t, l.Extend(ctx), mutex.ErrNotHeld)
	})
}

func TestExtendPostponesExpiry(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ttl := 300 * time.Millisecond
		m := backendMutex(t, backend, mutex.Config{Prefix: prefix(t), TTL: ttl})
		ctx := t.Context()

		l := must[mutex.Lease](t)(m.Lock(ctx, "k"))
		for range 5 {
			time.Sleep(ttl / 3)
			require.NoError(t, l.Extend(ctx))
		}
		// 500ms after the grant, longer than the TTL: still held thanks to Extend.
		require.NoError(t, l.Err())
		require.NoError(t, l.Unlock(ctx))
		<-l.Done()
		require.ErrorIs(t, l.Err(), mutex.ErrReleased)
		require.ErrorIs(t, l.Extend(ctx), mutex.ErrReleased)
		require.ErrorIs(t, l.Unlock(ctx), mutex.ErrReleased)
	})
}

func TestMultiKeyAtomicity(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		a, b := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx := t.Context()

		lb := must[mutex.Lease](t)(a.TryLock(ctx, "b"))
		_, err := b.TryLock(ctx, "a", "b", "c")
		var noe *mutex.NotObtainedError
		require.ErrorAs(t, err, &noe)
		assert.Equal(t, "b", noe.Key)
		// The failed attempt left none of the keys held.
		assert.Equal(t, mutex.Available, must[mutex.Status](t)(b.Check(ctx, "a", "c")))
		assert.Equal(t, mutex.PartiallyLocked, must[mutex.Status](t)(b.Check(ctx, "a", "b", "c")))

		// A waiter for all three gets them once b is released.
		got := lockAsync(ctx, b, "a", "b", "c")
		time.Sleep(50 * time.Millisecond)
		require.NoError(t, lb.Unlock(ctx))
		g := <-got
		require.NoError(t, g.err)
		l := g.lease
		require.NotNil(t, l)
		assert.Equal(t, []string{"a", "b", "c"}, l.Keys())
		assert.Equal(t, mutex.Locked, must[mutex.Status](t)(a.Check(ctx, "a", "b", "c")))
		_, err = a.TryLock(ctx, "c")
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.NoError(t, l.Extend(ctx))
		require.NoError(t, l.Unlock(ctx))
		assert.Empty(t, keysLeft(t, backend.Client(t), cfg.Prefix))
	})
}

func TestCancelledWait(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		a, b := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)

		l := must[mutex.Lease](t)(a.Lock(t.Context(), "k"))
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := b.Lock(ctx, "k")
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.ErrorIs(t, err, context.DeadlineExceeded)

		ctx2, cancel2 := context.WithCancel(t.Context())
		done := lockAsync(ctx2, b, "k")
		time.Sleep(20 * time.Millisecond)
		cancel2()
		err = (<-done).err
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.ErrorIs(t, err, context.Canceled)

		// A cancelled waiter leaves its queue: the next one is served.
		require.NoError(t, l.Unlock(t.Context()))
		l2 := must[mutex.Lease](t)(b.Lock(t.Context(), "k"))
		require.NoError(t, l2.Unlock(t.Context()))
	})
}

func TestWaiterWakesOnRelease(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		// A TTL far longer than the test: only the release can wake the waiter.
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute}
		a, b := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()

		l := must[mutex.Lease](t)(a.Lock(ctx, "k"))
		got := lockAsync(ctx, b, "k")
		time.Sleep(100 * time.Millisecond)
		released := time.Now()
		require.NoError(t, l.Unlock(ctx))
		g := <-got
		require.NoError(t, g.err)
		assert.Less(t, g.at.Sub(released), 10*time.Second, "woken by a timer, not by the release")
		require.NoError(t, g.lease.Unlock(ctx))
	})
}

func TestLocalWaitersQueue(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute}
		m := backendMutex(t, backend, cfg)
		ctx := t.Context()
		c := backend.Client(t)

		l := must[mutex.Lease](t)(m.Lock(ctx, "k"))
		const n = 20
		var wg sync.WaitGroup
		var inside atomic.Int32
		for range n {
			wg.Go(func() {
				l, err := m.Lock(ctx, "k")
				if !assert.NoError(t, err) {
					return
				}
				if inside.Add(1) != 1 {
					t.Error("overlap")
				}
				inside.Add(-1)
				assert.NoError(t, l.Unlock(ctx))
			})
		}
		time.Sleep(100 * time.Millisecond)
		require.NoError(t, redistest.ResetStats(ctx, c))
		require.NoError(t, l.Unlock(ctx))
		wg.Wait()
		stats := must[map[string]int64](t)(redistest.CommandStats(ctx, c))
		// One release then one acquire per waiter: local waiters do not all try
		// at every release.
		assert.LessOrEqual(t, stats["evalsha"], int64(2*n+1+2), "stats: %v", stats)
	})
}

func TestScriptFlushIsTransparent(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		m := backendMutex(t, backend, cfg)
		ctx := t.Context()
		c := backend.Client(t)
		for i := range 20 {
			l, err := m.Lock(ctx, "k")
			require.NoError(t, err)
			if i%3 == 0 {
				require.NoError(t, c.ScriptFlush(ctx).Err())
			}
			require.NoError(t, l.Extend(ctx))
			if i%3 == 1 {
				require.NoError(t, c.ScriptFlush(ctx).Err())
			}
			require.NoError(t, l.Unlock(ctx))
		}
		assert.Empty(t, keysLeft(t, c, cfg.Prefix))
	})
}

func TestKeysAreEscapedAndTagged(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		m := backendMutex(t, backend, cfg)
		ctx := t.Context()
		c := backend.Client(t)
		names := []string{"a:b", "a%3Ab", "{x}", "}{", "a b", "\x00\xff", "ü"}
		l := must[mutex.Lease](t)(m.TryLock(ctx, names...))
		keys := keysLeft(t, c, cfg.Prefix)
		require.Len(t, keys, len(names), "distinct names map to distinct keys")
		for _, k := range keys {
			rest := strings.TrimPrefix(k, cfg.Prefix+":")
			require.True(t, strings.HasPrefix(rest, "{") && strings.HasSuffix(rest, "}"), k)
			inner := rest[1 : len(rest)-1]
			assert.NotContains(t, inner, "{")
			assert.NotContains(t, inner, "}")
			assert.NotContains(t, inner, ":")
		}
		require.NoError(t, l.Unlock(ctx))
		assert.Empty(t, keysLeft(t, c, cfg.Prefix))
	})
}

func TestBadInput(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		_, err := mutex.New(nil, mutex.Config{})
		require.ErrorIs(t, err, mutex.ErrInvalid)
		var nilClient *redis.Client
		_, err = mutex.New(nilClient, mutex.Config{})
		require.ErrorIs(t, err, mutex.ErrInvalid)
		for _, cfg := range []mutex.Config{
			{TTL: -time.Second},
			{TTL: time.Millisecond},
			{Prefix: "a{b"},
			{Prefix: strings.Repeat("p", mutex.MaxPrefixLen+1)},
		} {
			_, err := mutex.New(c, cfg)
			require.ErrorIs(t, err, mutex.ErrInvalid, "%+v", cfg)
		}

		// A client whose every command fails proves no call reaches Redis.
		dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
		t.Cleanup(func() { dead.Close() })
		m, err := mutex.New(dead, mutex.Config{Prefix: prefix(t)})
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		ctx := t.Context()
		bad := [][]string{
			nil,
			{""},
			{"a", ""},
			{strings.Repeat("k", mutex.MaxKeyLen+1)},
			{"a", "b", "a"},
			make([]string, mutex.MaxKeys+1),
		}
		for _, keys := range bad {
			_, err := m.Lock(ctx, keys...)
			require.ErrorIs(t, err, mutex.ErrInvalid, "Lock %q", keys)
			_, err = m.TryLock(ctx, keys...)
			require.ErrorIs(t, err, mutex.ErrInvalid, "TryLock %q", keys)
			_, err = m.Check(ctx, keys...)
			require.ErrorIs(t, err, mutex.ErrInvalid, "Check %q", keys)
		}
		// The longest accepted key works.
		long := strings.Repeat("k", mutex.MaxKeyLen)
		ok := backendMutex(t, backend, mutex.Config{Prefix: prefix(t)})
		l := must[mutex.Lease](t)(ok.TryLock(ctx, long))
		require.NoError(t, l.Unlock(ctx))
	})
}

func TestRedisDownIsAnError(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { dead.Close() })
	m, err := mutex.New(dead, mutex.Config{Prefix: prefix(t)})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	_, err = m.TryLock(t.Context(), "k")
	require.Error(t, err)
	require.NotErrorIs(t, err, mutex.ErrNotObtained)
	l, err := m.Lock(t.Context(), "k")
	require.Error(t, err)
	require.NotErrorIs(t, err, mutex.ErrNotObtained)
	require.True(t, l == nil, "a failed Lock returns a nil Lease, not a nil pointer in one")
	_, err = m.Check(t.Context(), "k")
	require.Error(t, err)
}

func TestReentrantLockFails(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{Prefix: prefix(t)})
		ctx := t.Context()
		l := must[mutex.Lease](t)(m.Lock(ctx, "k"))
		inner := mutex.ContextWithLease(ctx, m, l)
		_, err := m.Lock(inner, "k")
		require.ErrorIs(t, err, mutex.ErrReentrant)
		_, err = m.TryLock(inner, "j", "k")
		require.ErrorIs(t, err, mutex.ErrReentrant)
		got, ok := mutex.HeldLease(inner, m, "k")
		require.True(t, ok)
		assert.Equal(t, l, got)
		// Other keys are free to lock.
		l2 := must[mutex.Lease](t)(m.Lock(inner, "j"))
		require.NoError(t, l2.Unlock(ctx))
		require.NoError(t, l.Unlock(ctx))
		_, ok = mutex.HeldLease(inner, m, "k")
		require.False(t, ok, "a released lease is not held")
	})
}

func TestCloseEndsWaits(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute}
		a := backendMutex(t, backend, cfg)
		b, err := mutex.New(backend.Client(t), cfg)
		require.NoError(t, err)
		l := must[mutex.Lease](t)(a.Lock(t.Context(), "k"))
		done := lockAsync(t.Context(), b, "k")
		time.Sleep(50 * time.Millisecond)
		require.NoError(t, b.Close())
		require.ErrorIs(t, (<-done).err, mutex.ErrClosed)
		_, err = b.TryLock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrClosed)
		require.NoError(t, l.Unlock(t.Context()))
	})
}

func TestLostReplyIsReleased(t *testing.T) {
	srv := redistest.Shared(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute}
	c := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	m, err := mutex.New(c, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	direct := srv.Client(t)

	// Warm up the connection and the script cache.
	l := must[mutex.Lease](t)(m.TryLock(t.Context(), "k"))
	require.NoError(t, l.Unlock(t.Context()))

	proxy.Pause()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	_, err = m.TryLock(ctx, "k")
	cancel()
	require.Error(t, err)
	proxy.Resume()
	// Whether or not the acquire ran, the key is released in the background
	// well before its one-minute TTL. What stays is the token's revocation
	// marker, which expires by itself.
	lockKey := cfg.Prefix + ":{k}"
	require.Eventually(t, func() bool {
		return direct.Exists(t.Context(), lockKey).Val() == 0 &&
			len(keysLeft(t, direct, lockKey+":x:")) == 1
	}, 10*time.Second, 20*time.Millisecond)
	marker := keysLeft(t, direct, lockKey+":x:")[0]
	assert.Greater(t, direct.PTTL(t.Context(), marker).Val(), time.Duration(0))
	assert.Equal(t, mutex.Available, must[mutex.Status](t)(newMutex(t, srv, cfg).Check(t.Context(), "k")))
}

// An Extend that runs into a concurrent Unlock does not make the Unlock
// report a lost lease.
func TestExtendDuringUnlock(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{Prefix: prefix(t)})
		ctx := t.Context()
		for range 200 {
			l := must[mutex.Lease](t)(m.Lock(ctx, "k"))
			extended := make(chan struct{})
			go func() {
				defer close(extended)
				_ = l.Extend(ctx)
			}()
			require.NoError(t, l.Unlock(ctx))
			<-extended
			require.ErrorIs(t, l.Err(), mutex.ErrReleased)
		}
	})
}
