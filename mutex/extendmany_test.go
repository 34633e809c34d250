package mutex_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

func TestExtendMany(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		ttl := 2 * time.Second
		cfg := mutex.Config{Prefix: prefix(t), TTL: ttl}
		// a and b share a client, so their leases go in one pipeline; other
		// has a client of its own.
		a, err := mutex.New(c, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { a.Close() })
		b, err := mutex.New(c, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { b.Close() })
		other := backendMutex(t, backend, cfg)
		ctx := t.Context()

		la := must[mutex.Lease](t)(a.Lock(ctx, "a"))
		lb := must[mutex.Lease](t)(b.Lock(ctx, "b1", "b2"))
		lo := must[mutex.Lease](t)(other.Lock(ctx, "o"))
		released := must[mutex.Lease](t)(a.Lock(ctx, "r"))
		require.NoError(t, released.Unlock(ctx))
		taken := must[mutex.Lease](t)(b.Lock(ctx, "t"))
		require.NoError(t, c.Set(ctx, cfg.Prefix+":{t}", "intruder:1", 0).Err())

		time.Sleep(ttl / 2)
		// The pipeline finds the script cache empty and loads the script again.
		require.NoError(t, c.ScriptFlush(ctx).Err())
		errs := mutex.ExtendMany(ctx, la, lb, lo, released, taken)
		require.Len(t, errs, 5)
		assert.NoError(t, errs[0])
		assert.NoError(t, errs[1])
		assert.NoError(t, errs[2])
		assert.ErrorIs(t, errs[3], mutex.ErrReleased)
		assert.ErrorIs(t, errs[4], mutex.ErrNotHeld)
		assert.ErrorIs(t, taken.Err(), mutex.ErrNotHeld, "a lease found taken ends")

		// The extended keys got a fresh TTL, and the leases a later deadline.
		for _, k := range []string{"a", "b1", "b2", "o"} {
			pttl := must[time.Duration](t)(c.PTTL(ctx, cfg.Prefix+":{"+k+"}").Result())
			assert.Greater(t, pttl, ttl*3/4, k)
		}
		for _, l := range []mutex.Lease{la, lb, lo} {
			d, ok := mutex.Deadline(l)
			require.True(t, ok)
			assert.Greater(t, time.Until(d), ttl/2)
			require.NoError(t, l.Unlock(ctx))
		}
		require.NoError(t, c.Del(ctx, cfg.Prefix+":{t}").Err())
	})
}

// taggedClient is a client of a type that cannot be a map key.
type taggedClient struct {
	redis.UniversalClient
	tags []string
}

// Leases of a client whose type cannot be a map key are extended one by
// one, by ExtendMany and by a Renewer, instead of panicking.
func TestExtendManyUncomparableClient(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 600 * time.Millisecond}
		m, err := mutex.New(taggedClient{UniversalClient: backend.Client(t), tags: []string{"a"}}, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		ctx := t.Context()
		a := must[mutex.Lease](t)(m.Lock(ctx, "a"))
		b := must[mutex.Lease](t)(m.Lock(ctx, "b"))
		for i, err := range mutex.ExtendMany(ctx, a, b) {
			require.NoError(t, err, "lease %d", i)
		}

		r, err := mutex.NewRenewer(mutex.RenewerConfig{})
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		for _, l := range []mutex.Lease{a, b} {
			x, err := r.Renew(l, mutex.RenewPolicy{})
			require.NoError(t, err)
			defer x.Stop()
		}
		time.Sleep(2 * cfg.TTL)
		require.NoError(t, a.Err())
		require.NoError(t, b.Err())
		require.NoError(t, a.Unlock(ctx))
		require.NoError(t, b.Unlock(ctx))
	})
}
