package mutex_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

func ExampleRenewer() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-renewer", TTL: time.Second})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	// A Renewer of its own; RunLocked and WithLock use mutex.DefaultRenewer.
	r, err := mutex.NewRenewer(mutex.RenewerConfig{})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	lease, err := m.TryLock(ctx, "report")
	if err != nil {
		panic(err)
	}
	// Extend when less than 500ms of validity is left.
	renewal, err := r.Renew(lease, mutex.RenewPolicy{Threshold: 500 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	time.Sleep(1500 * time.Millisecond) // longer than the TTL
	fmt.Println("still held:", lease.Err() == nil)

	renewal.Stop()
	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}
	fmt.Println(lease.Err())
	// Output:
	// still held: true
	// mutex: lease released
}

func TestRenewRunLockedThroughDefaultRenewer(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, cfg := wlSetup(t, backend, 600*time.Millisecond)
		r := mutex.DefaultRenewer()
		before := r.Stats()
		err := mutex.WithLock(t.Context(), m, "k", func(ctx context.Context) error {
			assert.Equal(t, before.Leases+1, r.Stats().Leases)
			// Three renewals at a third of the validity each span more than the
			// TTL.
			require.Eventually(t, func() bool { return r.Stats().Renewals >= before.Renewals+3 },
				10*time.Second, time.Millisecond)
			_, err := other.TryLock(ctx, "k")
			require.ErrorIs(t, err, mutex.ErrNotObtained)
			return ctx.Err()
		})
		require.NoError(t, err)
		assert.Equal(t, before.Leases, r.Stats().Leases, "the renewal stopped with fn")
		assert.Empty(t, wlKeys(t, backend.Client(t), cfg))
	})
}

func TestRenewerOwnLeases(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, other, cfg := wlSetup(t, backend, 600*time.Millisecond)
		r, err := mutex.NewRenewer(mutex.RenewerConfig{})
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		lease, err := m.TryLock(t.Context(), "k")
		require.NoError(t, err)
		renewal, err := r.Renew(lease, mutex.RenewPolicy{Interval: 100 * time.Millisecond})
		require.NoError(t, err)
		assert.Equal(t, 1, r.Stats().Leases)
		require.Eventually(t, func() bool { return r.Stats().Renewals >= 10 }, 10*time.Second, time.Millisecond)
		require.NoError(t, lease.Err(), "held past its TTL")
		_, err = other.TryLock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrNotObtained)

		renewal.Stop()
		renewal.Stop()
		assert.Equal(t, 0, r.Stats().Leases)
		<-lease.Done()
		require.ErrorIs(t, lease.Err(), mutex.ErrNotHeld, "no longer renewed, the lease runs out")
		direct := backend.Client(t)
		require.Eventually(t, func() bool { return len(wlKeys(t, direct, cfg)) == 0 }, 10*time.Second, 10*time.Millisecond)
	})
}

func TestRenewerBadInput(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, _, _ := wlSetup(t, backend, 0)
		_, err := mutex.NewRenewer(mutex.RenewerConfig{Workers: -1})
		require.ErrorIs(t, err, mutex.ErrInvalid)
		assert.True(t, strings.HasPrefix(err.Error(), "mutex: invalid argument: negative value in renewer config"), "%v", err)

		r, err := mutex.NewRenewer(mutex.RenewerConfig{})
		require.NoError(t, err)
		_, err = r.Renew(nil, mutex.RenewPolicy{})
		require.EqualError(t, err, "mutex: invalid argument: nil Lease to renew")
		lease, err := m.TryLock(t.Context(), "k")
		require.NoError(t, err)
		defer lease.Unlock(context.Background())
		_, err = r.Renew(lease, mutex.RenewPolicy{Interval: -time.Second})
		require.EqualError(t, err, "mutex: invalid argument: renew interval -1s, want >= 0")
		_, err = r.Renew(lease, mutex.RenewPolicy{Threshold: -time.Second})
		require.EqualError(t, err, "mutex: invalid argument: renew threshold -1s, want >= 0")
		assert.Equal(t, 0, r.Stats().Leases)

		require.NoError(t, r.Err())
		require.NoError(t, r.Close())
		require.NoError(t, r.Close())
		require.EqualError(t, r.Err(), "renew: mutex: closed")
		_, err = r.Renew(lease, mutex.RenewPolicy{})
		require.ErrorIs(t, err, mutex.ErrClosed)

		d := mutex.DefaultRenewer()
		require.ErrorIs(t, d.Close(), mutex.ErrInvalid)
		require.NoError(t, d.Err(), "the process-wide Renewer stays open")
	})
}

// TestRenewRunLockedDoesNotWaitForStalledRenewal stalls the connection of an
// extension in flight when fn returns. RunLocked must unlock at once on
// another connection rather than wait for the extension.
func TestRenewRunLockedDoesNotWaitForStalledRenewal(t *testing.T) {
	for _, cc := range redistest.FaultConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			srv := redistest.Shared(t)
			proxy := redistest.NewProxy(t, srv.Addr())
			// Connections dialled before the stall go through the proxy;
			// later ones go straight to the server.
			stalled := redistest.NewDetour(proxy, srv.Addr())
			c := stalled.Client(t, srv, cc.Mod)
			cfg := mutex.Config{Prefix: prefix(t), TTL: time.Second}
			m, err := mutex.New(c, cfg)
			require.NoError(t, err)
			t.Cleanup(func() { m.Close() })
			r := mutex.DefaultRenewer()
			before := r.Stats().Renewals

			var returned time.Time
			err = mutex.WithLock(t.Context(), m, "k", func(ctx context.Context) error {
				require.Eventually(t, func() bool { return r.Stats().Renewals > before },
					10*time.Second, time.Millisecond)
				require.Equal(t, uint32(1), c.PoolStats().TotalConns, "one pooled connection, through the proxy")
				stalled.Bypass()
				proxy.Pause()
				select {
				case <-stalled.Started(): // the next extension
				case <-time.After(10 * time.Second):
					t.Fatal("no extension started")
				}
				// It has taken the only connection, which stalls.
				require.Eventually(t, func() bool { return c.PoolStats().IdleConns == 0 },
					10*time.Second, time.Millisecond)
				returned = time.Now()
				return nil
			})
			elapsed := time.Since(returned)
			proxy.Resume()
			require.NoError(t, err)
			assert.Less(t, elapsed, 200*time.Millisecond, "RunLocked waited for the extension in flight")
			assert.Empty(t, keysLeft(t, srv.Client(t), cfg.Prefix))
		})
	}
}

// scriptHook counts the script calls (alone or in pipelines) a client has
// sent and not yet seen answered, and the most at once among those sent
// while on.
type scriptHook struct {
	on        atomic.Bool
	now, most atomic.Int64
}

func isScript(cmd redis.Cmder) bool {
	name := cmd.Name()
	return name == "evalsha" || name == "eval"
}

func (h *scriptHook) enter() bool {
	n := h.now.Add(1)
	if h.on.Load() {
		for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
		}
	}
	return true
}

func (h *scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isScript(cmd) && h.enter() {
			defer h.now.Add(-1)
		}
		return next(ctx, cmd)
	}
}

func (h *scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && isScript(cmds[0]) && h.enter() {
			defer h.now.Add(-1)
		}
		return next(ctx, cmds)
	}
}

// While the extensions of a client's leases hang, leases of the client that
// fall due meanwhile wait for them instead of opening more pipelines.
func TestRenewerOneExtensionInFlightPerClient(t *testing.T) {
	srv := redistest.Shared(t)
	c, proxy := redistest.ProxiedClient(t, srv, redistest.ContextTimeouts.Mod)
	m, err := mutex.New(c, mutex.Config{Prefix: prefix(t), TTL: 2 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	r, err := mutex.NewRenewer(mutex.RenewerConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	hook := &scriptHook{}
	c.AddHook(hook)

	var renewals []*mutex.Renewal
	for i := range 4 {
		l := must[mutex.Lease](t)(m.TryLock(t.Context(), fmt.Sprint("k", i)))
		x, err := r.Renew(l, mutex.RenewPolicy{Interval: 200 * time.Millisecond})
		require.NoError(t, err)
		renewals = append(renewals, x)
		time.Sleep(50 * time.Millisecond) // due apart, in batches of their own
	}
	// Pause between extensions, so that the ones that hang are counted
	// from their start.
	for hook.now.Load() != 0 {
		time.Sleep(time.Millisecond)
	}
	hook.on.Store(true) // only the extensions call scripts from now on
	proxy.Pause()
	time.Sleep(time.Second)
	hook.on.Store(false)
	proxy.Resume()
	for _, x := range renewals {
		x.Stop()
		uctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = x.Lease().Unlock(uctx)
		cancel()
	}
	assert.EqualValues(t, 1, hook.most.Load(), "pipelines in flight at once on one client")
}
