package mutex_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// A restart without persistence forgets the held lock. A waiter recovers
// through its pub/sub connection's reconnect, long before the old TTL.
func TestWaiterRecoversFromRestart(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			srv := redistest.Start(t)
			cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: fifo}
			a, b := newMutex(t, srv, cfg), newMutex(t, srv, cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()

			held := must[mutex.Lease](t)(a.Lock(ctx, "k"))
			got := lockAsync(ctx, b, "k")
			time.Sleep(100 * time.Millisecond)
			srv.Restart(t)
			g := <-got
			require.NoError(t, g.err)
			lease := g.lease
			assert.Greater(t, lease.Fence(), held.Fence())
			require.NoError(t, lease.Unlock(ctx))
			// The old lease cannot release anything of the new state.
			require.ErrorIs(t, held.Unlock(ctx), mutex.ErrNotHeld)
		})
	}
}

// While Redis does not answer, calls fail with an error that is not
// contention, and the lease stays valid until its deadline.
func TestPausedRedis(t *testing.T) {
	srv := redistest.Start(t)
	cfg := mutex.Config{Prefix: prefix(t), TTL: 2 * time.Second}
	// Context deadlines bound Redis calls only with ContextTimeoutEnabled.
	c := srv.Client(t, func(o *redis.Options) { o.ContextTimeoutEnabled = true })
	m, err := mutex.New(c, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	ctx := t.Context()
	l := must[mutex.Lease](t)(m.Lock(ctx, "k"))

	srv.Pause(t)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = l.Extend(short)
	cancel()
	require.Error(t, err)
	require.NotErrorIs(t, err, mutex.ErrNotHeld)
	require.NoError(t, l.Err(), "a failed call is no proof the lease was lost")
	short, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = m.TryLock(short, "other")
	cancel()
	require.Error(t, err)
	require.NotErrorIs(t, err, mutex.ErrNotObtained)
	srv.Resume(t)

	<-l.Done()
	require.ErrorIs(t, l.Err(), mutex.ErrNotHeld)
}

// A full Redis with maxmemory-policy noeviction refuses new grants with an
// error, not contention, and keeps the leases it holds: they extend and
// release as usual.
func TestFullRedisRefusesGrantsAndKeepsLeases(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			srv := redistest.Start(t, redistest.WithArgs("--maxmemory-policy", "noeviction"))
			m := newMutex(t, srv, mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: fifo})
			ctx := t.Context()
			held := must[mutex.Lease](t)(m.Lock(ctx, "held"))

			// A limit below the memory in use makes Redis full.
			c := srv.Client(t)
			require.NoError(t, c.ConfigSet(ctx, "maxmemory", "1").Err())
			err := c.Set(ctx, "junk", "x", 0).Err()
			require.True(t, redis.HasErrorPrefix(err, "OOM"), "Redis is not full: %v", err)

			_, err = m.TryLock(ctx, "new")
			require.Error(t, err)
			require.NotErrorIs(t, err, mutex.ErrNotObtained)
			require.NoError(t, held.Extend(ctx))
			require.NoError(t, held.Err())
			require.NoError(t, held.Unlock(ctx))
			st, err := m.Check(ctx, "held")
			require.NoError(t, err)
			require.Equal(t, mutex.Available, st)
		})
	}
}
