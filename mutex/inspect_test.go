package mutex_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// oddOwner has every character that separates the parts of tokens, lock
// values and wake-up messages.
const oddOwner = "web 1.example:8080/{job}~100%é"

func TestInspect(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second, Owner: "worker-7"}
		m := backendMutex(t, backend, cfg)
		// Keys in several Cluster slots, one of them with escaped bytes.
		keys := []string{"a", "b:{x}", "c", "free"}
		l := must[mutex.Lease](t)(m.Lock(ctx, keys[:3]...))

		infos := must[[]mutex.KeyInfo](t)(m.Inspect(ctx, keys...))
		require.Len(t, infos, len(keys))
		for i, info := range infos[:3] {
			assert.Equal(t, keys[i], info.Key)
			assert.True(t, info.Held, "%s", info.Key)
			assert.Equal(t, "worker-7", info.Owner)
			if i == 0 {
				// On a Cluster, each slot group has a token of its own.
				assert.Equal(t, l.Token(), info.Token)
			}
			assert.Equal(t, l.FenceOf(keys[i]), info.Fence)
			assert.Greater(t, info.TTL, 4*time.Second)
			assert.LessOrEqual(t, info.TTL, cfg.TTL)
			assert.Zero(t, info.Queue)
			v, err := backend.Client(t).Get(ctx, info.RedisKey).Result()
			require.NoError(t, err)
			assert.Equal(t, info.Token+":"+strconv.FormatInt(info.Fence, 10), v)
		}
		assert.Equal(t, mutex.KeyInfo{Key: "free", RedisKey: cfg.Prefix + ":{free}"}, infos[3])

		require.NoError(t, l.Unlock(ctx))
		infos = must[[]mutex.KeyInfo](t)(m.Inspect(ctx, keys...))
		for _, info := range infos {
			assert.False(t, info.Held, "%s", info.Key)
			assert.Empty(t, info.Owner)
		}
	})
}

func TestInspectFIFOQueue(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second, FIFO: true, Owner: oddOwner}
		holder := backendMutex(t, backend, cfg)
		l := must[mutex.Lease](t)(holder.Lock(ctx, "k"))
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// The second waiter queues once the first has: they get the key
		// in that order.
		waiters := []<-chan grant{lockAsync(wctx, backendMutex(t, backend, cfg), "k")}
		waitQueueLen(t, backend.Client(t), cfg.Prefix, "k", 1)
		waiters = append(waiters, lockAsync(wctx, backendMutex(t, backend, cfg), "k"))
		waitQueueLen(t, backend.Client(t), cfg.Prefix, "k", 2)

		info := must[[]mutex.KeyInfo](t)(holder.Inspect(ctx, "k"))[0]
		assert.True(t, info.Held)
		assert.Equal(t, oddOwner, info.Owner)
		assert.Equal(t, l.Token(), info.Token)
		assert.Equal(t, int64(2), info.Queue)

		// The lock goes down the queue to waiters whose tokens carry the
		// same label.
		require.NoError(t, l.Unlock(ctx))
		for _, w := range waiters {
			g := <-w
			require.NoError(t, g.err)
			info := must[[]mutex.KeyInfo](t)(holder.Inspect(ctx, "k"))[0]
			assert.Equal(t, g.lease.Token(), info.Token)
			assert.Equal(t, oddOwner, info.Owner)
			require.NoError(t, g.lease.Unlock(ctx))
		}
		drained(t, backend.Client(t), cfg.Prefix)
	})
}

func TestOwnerDefault(t *testing.T) {
	srv := redistest.Shared(t)
	m := newMutex(t, srv, mutex.Config{Prefix: prefix(t)})
	host, err := os.Hostname()
	require.NoError(t, err)
	want := host + ":" + strconv.Itoa(os.Getpid())
	assert.Equal(t, want, m.Owner())
	l := must[mutex.Lease](t)(m.TryLock(t.Context(), "k"))
	defer l.Unlock(t.Context())
	info := must[[]mutex.KeyInfo](t)(m.Inspect(t.Context(), "k"))[0]
	assert.Equal(t, want, info.Owner)
}

func TestOwnerInvalid(t *testing.T) {
	// A client of a port nobody listens on: nothing may reach Redis.
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	for _, owner := range []string{
		strings.Repeat("x", mutex.MaxOwnerLen+1),
		"line\nbreak",
		"tab\there",
		"bad \xff utf-8",
	} {
		_, err := mutex.New(c, mutex.Config{Owner: owner})
		assert.ErrorIs(t, err, mutex.ErrInvalid, "%q", owner)
	}
	m, err := mutex.New(c, mutex.Config{Owner: strings.Repeat("é", mutex.MaxOwnerLen/2)})
	require.NoError(t, err)
	m.Close()
}

func TestInspectInvalid(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	m, err := mutex.New(c, mutex.Config{})
	require.NoError(t, err)
	defer m.Close()
	ctx := t.Context()
	for _, keys := range [][]string{nil, {""}, {"a", "a"}, {strings.Repeat("k", mutex.MaxKeyLen+1)}} {
		_, err := m.Inspect(ctx, keys...)
		assert.ErrorIs(t, err, mutex.ErrInvalid, "%q", keys)
	}
	for _, token := range []string{"", "a:1", "a b", strings.Repeat("t", mutex.MaxKeyLen+1)} {
		_, err := m.ForceUnlock(ctx, "k", token)
		assert.ErrorIs(t, err, mutex.ErrInvalid, "%q", token)
	}
	_, err = m.ForceUnlock(ctx, "", "token")
	assert.ErrorIs(t, err, mutex.ErrInvalid)
}

func TestList(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		m := backendMutex(t, backend, cfg)
		held := []string{"job:1", "job:2", "job:10", "a*b", "sp ace{}", "x"}
		for _, k := range held {
			l := must[mutex.Lease](t)(m.TryLock(ctx, k))
			t.Cleanup(func() { l.Unlock(context.Background()) })
		}
		// Keys of another prefix that starts alike, and of no prefix.
		other := backendMutex(t, backend, mutex.Config{Prefix: cfg.Prefix + ":sub"})
		l := must[mutex.Lease](t)(other.TryLock(ctx, "job:3"))
		t.Cleanup(func() { l.Unlock(context.Background()) })

		for pattern, want := range map[string][]string{
			"":         {"a*b", "job:1", "job:10", "job:2", "sp ace{}", "x"},
			"*":        {"a*b", "job:1", "job:10", "job:2", "sp ace{}", "x"},
			"job:*":    {"job:1", "job:10", "job:2"},
			"job:?":    {"job:1", "job:2"},
			"job:[^2]": {"job:1"},
			"a\\*b":    {"a*b"},
			"sp ace*":  {"sp ace{}"},
			"nothing":  {},
		} {
			got := must[[]string](t)(m.List(ctx, pattern))
			assert.Equal(t, want, got, "pattern %q", pattern)
		}
		assert.Equal(t, []string{"job:3"}, must[[]string](t)(other.List(ctx, "")))
	})
}

func TestListFIFOQueue(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := t.Context()
	cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second, FIFO: true}
	m := newMutex(t, srv, cfg)
	l := must[mutex.Lease](t)(m.Lock(ctx, "k"))
	wctx, cancel := context.WithCancel(ctx)
	w := lockAsync(wctx, newMutex(t, srv, cfg), "k")
	waitQueueLen(t, srv.Client(t), cfg.Prefix, "k", 1)
	// A queue whose lock is free for a moment is listed too.
	require.NoError(t, srv.Client(t).Del(ctx, cfg.Prefix+":{k}").Err())
	assert.Equal(t, []string{"k"}, must[[]string](t)(m.List(ctx, "")))
	cancel()
	g := <-w
	if g.err == nil {
		require.NoError(t, g.lease.Unlock(ctx))
	}
	assert.ErrorIs(t, l.Unlock(ctx), mutex.ErrNotHeld)
	drained(t, srv.Client(t), cfg.Prefix)
}

func TestForceUnlock(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ctx := t.Context()
		cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second}
		holder := backendMutex(t, backend, cfg)
		admin := backendMutex(t, backend, cfg)
		l := must[mutex.Lease](t)(holder.Lock(ctx, "k"))
		waiter := lockAsync(ctx, backendMutex(t, backend, cfg), "k")
		time.Sleep(50 * time.Millisecond)

		info := must[[]mutex.KeyInfo](t)(admin.Inspect(ctx, "k"))[0]
		released, err := admin.ForceUnlock(ctx, "k", info.Token+"x")
		require.NoError(t, err)
		assert.False(t, released, "released under another token")

		start := time.Now()
		released, err = admin.ForceUnlock(ctx, "k", info.Token)
		require.NoError(t, err)
		assert.True(t, released)
		// The release announcement wakes the waiter long before the TTL.
		g := <-waiter
		require.NoError(t, g.err)
		assert.Less(t, time.Since(start), cfg.TTL/2)
		assert.Greater(t, g.lease.Fence(), l.Fence())

		// The old holder finds out at its next Extend, and cannot take
		// the key back with its revoked token.
		assert.ErrorIs(t, l.Extend(ctx), mutex.ErrNotHeld)
		select {
		case <-l.Done():
		default:
			t.Error("Done not closed after the lease was found lost")
		}
		released, err = admin.ForceUnlock(ctx, "k", info.Token)
		require.NoError(t, err)
		assert.False(t, released)
		require.NoError(t, g.lease.Unlock(ctx))
	})
}
