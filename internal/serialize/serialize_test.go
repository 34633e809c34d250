package serialize_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/internal/serialize"
	"github.com/distlock/distlock/mutex"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestCheckKey(t *testing.T) {
	for _, tc := range []struct {
		key     string
		missing bool
		problem string
	}{
		{"", true, ""},
		{"order:42", false, ""},
		{"ü", false, ""},
		{strings.Repeat("k", 9), false, "9 bytes, longer than 8"},
		{"a\xffb", false, "not valid UTF-8"},
		{"a\nb", false, "control character at byte 1"},
	} {
		missing, problem := serialize.CheckKey(tc.key, 8)
		assert.Equal(t, tc.missing, missing, "%q", tc.key)
		assert.Equal(t, tc.problem, problem, "%q", tc.key)
	}
}

func TestAcquire(t *testing.T) {
	srv := redistest.Shared(t)
	m, err := mutex.New(srv.Client(t), mutex.Config{Prefix: "serialize-test", TTL: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	ctx := t.Context()

	lease, unavailable, err := serialize.Acquire(ctx, m, "k", 0)
	require.NoError(t, err)
	require.False(t, unavailable)

	// Busy, failing fast and after a wait budget.
	_, unavailable, err = serialize.Acquire(ctx, m, "k", 0)
	require.ErrorIs(t, err, mutex.ErrNotObtained)
	require.False(t, unavailable)
	_, unavailable, err = serialize.Acquire(ctx, m, "k", 50*time.Millisecond)
	require.ErrorIs(t, err, mutex.ErrNotObtained)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, unavailable)

	// Reentrant: the context already holds the key.
	_, unavailable, err = serialize.Acquire(mutex.ContextWithLease(ctx, m, lease), m, "k", 0)
	require.ErrorIs(t, err, mutex.ErrReentrant)
	require.False(t, unavailable)
	require.NoError(t, lease.Unlock(ctx))

	// A key the Locker refuses although it passed CheckKey.
	_, unavailable, err = serialize.Acquire(ctx, m, strings.Repeat("k", mutex.MaxKeyLen+1), 0)
	require.ErrorIs(t, err, mutex.ErrInvalid)
	require.False(t, unavailable)

	// Redis down.
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { dead.Close() })
	dm, err := mutex.New(dead, mutex.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { dm.Close() })
	_, unavailable, err = serialize.Acquire(ctx, dm, "k", 0)
	require.Error(t, err)
	require.True(t, unavailable)

	// The request ended: not a Redis failure.
	done, cancel := context.WithCancel(ctx)
	cancel()
	_, unavailable, err = serialize.Acquire(done, dm, "k", 0)
	require.ErrorIs(t, err, mutex.ErrNotObtained)
	require.True(t, errors.Is(err, context.Canceled))
	require.False(t, unavailable)
}

// cancelOnGrant is a Locker whose grants arrive just after the caller's
// context ended, as when a client gives up while its request waits.
type cancelOnGrant struct {
	mutex.Locker
	cancel context.CancelFunc
}

func (c cancelOnGrant) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	l, err := c.Locker.Lock(ctx, keys...)
	c.cancel()
	return l, err
}

func TestAcquireAfterTheRequestEnded(t *testing.T) {
	srv := redistest.Shared(t)
	m, err := mutex.New(srv.Client(t), mutex.Config{Prefix: "serialize-test-ended"})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	_, unavailable, err := serialize.Acquire(ctx, cancelOnGrant{m, cancel}, "k", time.Second)
	require.ErrorIs(t, err, mutex.ErrNotObtained)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, unavailable)
	// The lease granted too late was released.
	st, err := m.Check(t.Context(), "k")
	require.NoError(t, err)
	assert.Equal(t, mutex.Available, st)
}

// newProxiedMutex returns a Mutex whose client, configured by mod, reaches srv
// through a proxy, and the proxy. The client is connected before it returns,
// so that a Pause stalls a call in flight rather than a dial.
func newProxiedMutex(t *testing.T, srv *redistest.Server, cfg mutex.Config, mod func(*redis.Options)) (*mutex.Mutex, *redistest.Proxy) {
	t.Helper()
	client, p := redistest.ProxiedClient(t, srv, mod)
	m, err := mutex.New(client, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, p
}

// shortTimeouts bounds the go-redis calls that no context deadline bounds
// (those of a client without ContextTimeoutEnabled) to a second.
func shortTimeouts(o *redis.Options) {
	o.DialTimeout = time.Second
	o.ReadTimeout = time.Second
	o.WriteTimeout = time.Second
}

// TestAcquireBudgetEndsDuringRedisCall holds Redis's replies back past the
// budget: no attempt was seen to find the key held and Redis does not
// answer the probe, so Redis is unavailable, held key or not.
func TestAcquireBudgetEndsDuringRedisCall(t *testing.T) {
	srv := redistest.Shared(t)
	for i, tc := range redistest.FaultConfigs {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			cfg := mutex.Config{Prefix: fmt.Sprintf("serialize-test-budget-%d", i)}
			holder, err := mutex.New(srv.Client(t), cfg)
			require.NoError(t, err)
			t.Cleanup(func() { holder.Close() })
			held, err := holder.TryLock(t.Context(), "k")
			require.NoError(t, err)
			t.Cleanup(func() { held.Unlock(context.Background()) })

			m, p := newProxiedMutex(t, srv, cfg, func(o *redis.Options) {
				tc.Mod(o)
				shortTimeouts(o)
			})
			p.Pause()
			t.Cleanup(p.Resume)
			for _, key := range []string{"k", "free"} {
				_, unavailable, err := serialize.Acquire(t.Context(), m, key, 100*time.Millisecond)
				require.True(t, unavailable, "%s: %v", key, err)
				require.NotErrorIs(t, err, mutex.ErrNotObtained)
				require.ErrorContains(t, err, "no answer within the 100ms wait: check: ")
			}
		})
	}
}

// budgetLocker is a Locker whose Lock fails with a network error at its
// context's deadline, as a client whose socket deadline is that of the
// context does, or when its context ends.
type budgetLocker struct{ mutex.Locker }

func (budgetLocker) Lock(ctx context.Context, _ ...string) (mutex.Lease, error) {
	d, _ := ctx.Deadline()
	select {
	case <-time.After(time.Until(d)):
	case <-ctx.Done():
	}
	return nil, errors.New("mutex: acquire: i/o timeout")
}

// TestAcquireFailureAtBudgetEnd checks that a Locker failure is a failure
// even when the budget ran out meanwhile, and that the request's own end
// keeps its cause.
func TestAcquireFailureAtBudgetEnd(t *testing.T) {
	_, unavailable, err := serialize.Acquire(t.Context(), budgetLocker{}, "k", 20*time.Millisecond)
	require.True(t, unavailable)
	require.EqualError(t, err, "mutex: acquire: i/o timeout")

	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(10*time.Millisecond, cancel)
	_, unavailable, err = serialize.Acquire(ctx, budgetLocker{}, "k", time.Minute)
	require.ErrorIs(t, err, mutex.ErrNotObtained)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, unavailable)
}

// keylessLocker is a Locker whose Lock waits for its context and then
// reports contention without naming a key, as a *mutex.Mutex does for a
// call that waited behind other callers of the same Mutex.
type keylessLocker struct{ mutex.Locker }

func (keylessLocker) Lock(ctx context.Context, _ ...string) (mutex.Lease, error) {
	<-ctx.Done()
	return nil, &mutex.NotObtainedError{Cause: ctx.Err()}
}

func (keylessLocker) TryLock(context.Context, ...string) (mutex.Lease, error) {
	return nil, fmt.Errorf("decorated: %w", mutex.ErrNotObtained)
}

// TestAcquireNamesTheKey checks that contention always comes back as a
// *mutex.NotObtainedError naming the key: when the Locker names none, and
// Redis answers the probe after the budget.
func TestAcquireNamesTheKey(t *testing.T) {
	srv := redistest.Shared(t)
	m, err := mutex.New(srv.Client(t), mutex.Config{Prefix: "serialize-test-names"})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	l := keylessLocker{m}

	_, unavailable, err := serialize.Acquire(t.Context(), l, "k", 20*time.Millisecond)
	require.False(t, unavailable, "%v", err)
	var ne *mutex.NotObtainedError
	require.ErrorAs(t, err, &ne)
	require.Equal(t, "k", ne.Key)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.EqualError(t, err, `mutex: not obtained: "k" is held: context deadline exceeded`)

	_, unavailable, err = serialize.Acquire(t.Context(), l, "k", 0)
	require.False(t, unavailable, "%v", err)
	require.ErrorAs(t, err, &ne)
	require.Equal(t, "k", ne.Key)
	require.NotErrorIs(t, err, context.DeadlineExceeded)
}

// TestAcquireLocalQueue has calls of one Mutex wait behind another of its
// calls, so that they make no attempt of their own: when their budget runs
// out, the key is busy, named in the error.
func TestAcquireLocalQueue(t *testing.T) {
	srv := redistest.Shared(t)
	cfg := mutex.Config{Prefix: "serialize-test-queue"}
	holder, err := mutex.New(srv.Client(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { holder.Close() })
	m, err := mutex.New(srv.Client(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	held, err := holder.TryLock(t.Context(), "k")
	require.NoError(t, err)
	t.Cleanup(func() { held.Unlock(context.Background()) })

	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := m.Lock(ctx, "k")
		first <- err
	}()
	time.Sleep(100 * time.Millisecond) // the first call waits
	_, unavailable, err := serialize.Acquire(t.Context(), m, "k", 100*time.Millisecond)
	require.False(t, unavailable, "%v", err)
	var ne *mutex.NotObtainedError
	require.ErrorAs(t, err, &ne)
	require.Equal(t, "k", ne.Key)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	cancel()
	require.ErrorIs(t, <-first, context.Canceled)
}
