package mutex_test

import (
	"context"
	"fmt"
	"sync/atomic"
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

// roundTrips counts the requests a client sends, single commands and
// pipelines, but for the set-up of new connections.
type roundTrips struct{ n atomic.Int32 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "hello" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() != "client" {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// After the script cache is flushed, ExtendMany loads the script once and
// sends the batch again, rather than extending lease by lease.
func TestExtendManyAfterScriptFlush(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	c := srv.Client(t)
	h := &roundTrips{}
	c.AddHook(h)
	m, err := mutex.New(c, mutex.Config{Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var leases []mutex.Lease
	for i := range 20 {
		leases = append(leases, must[mutex.Lease](t)(m.Lock(ctx, fmt.Sprint("k", i))))
	}
	if err := srv.Client(t).ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	h.n.Store(0)
	for i, err := range mutex.ExtendMany(ctx, leases...) {
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
	}
	if n := h.n.Load(); n > 3 {
		t.Fatalf("%d round trips for 20 leases after SCRIPT FLUSH, want 3 (batch, load, batch)", n)
	}
	for _, l := range leases {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
