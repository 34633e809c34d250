package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// A slot migration under traffic loses no lock. Leases held across every
// migration of their slot stay valid and can be extended and unlocked;
// FIFO waiters queued across them keep their order; and a hot workload on
// the slot (see hotload_test.go), whose holders also Extend, sees no two
// valid leases of a key at once, no lease lost, and only transient errors.
func TestClusterMigrationKeepsLocks(t *testing.T) {
	c := redistest.StartCluster(t)
	const key = "mig"
	slot := redistest.Slot("{" + key + "}")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	newM := func(cfg mutex.Config) *mutex.Mutex {
		m, err := mutex.New(c.Client(t, ctxTimeouts), cfg)
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		return m
	}

	// Filler keys in the slot make each migration take a while (its keys
	// move a hundred at a time), so that the workload runs into it.
	pipe := c.Client(t).Pipeline()
	for i := range migFiller {
		pipe.Set(ctx, fmt.Sprintf("filler:{%s}:%d", key, i), "x", 0)
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)

	// Long leases, one per mode, each with waiters of other Mutexes behind
	// it: two FIFO waiters in a known order, one plain waiter.
	longPlain := mutex.Config{Prefix: "long-plain", TTL: 10 * time.Second}
	longFIFO := mutex.Config{Prefix: "long-fifo", TTL: 10 * time.Second, FIFO: true}
	heldPlain := must[mutex.Lease](t)(newM(longPlain).Lock(ctx, key))
	heldFIFO := must[mutex.Lease](t)(newM(longFIFO).Lock(ctx, key))
	plainWaiter := lockAsync(ctx, newM(longPlain), key)
	fifoFirst := lockAsync(ctx, newM(longFIFO), key)
	time.Sleep(100 * time.Millisecond)
	fifoSecond := lockAsync(ctx, newM(longFIFO), key)
	time.Sleep(100 * time.Millisecond)

	lockers := newHotLockers(t, func() redis.UniversalClient { return c.Client(t, ctxTimeouts) }, 2*time.Second, 2, 2)
	w := startHotLoad(lockers, hotConfig{keys: []string{key}, lockTimeout: hotLockTimeout, hold: 4 * time.Millisecond, extend: true, perLocker: 2})

	// Move the slot around every primary twice, and home again.
	home := c.PrimaryFor(t, "{"+key+"}")
	var route []*redistest.Server
	for range 2 {
		for _, p := range c.Primaries(t) {
			if p != home {
				route = append(route, p)
			}
		}
		route = append(route, home)
	}
	time.Sleep(200 * time.Millisecond)
	for _, to := range route {
		start := time.Now()
		c.MigrateSlot(t, slot, to)
		t.Logf("slot %d moved to %s in %v", slot, to.Addr(), time.Since(start).Round(time.Millisecond))
		for _, l := range []mutex.Lease{heldPlain, heldFIFO} {
			require.NoError(t, l.Err(), "a lease held across the migration ended")
			require.NoError(t, l.Extend(ctx), "a lease held across the migration could not be extended")
		}
		time.Sleep(150 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	w.halt(t)
	w.check(t, lockers, true)

	// The waiters are still waiting, and get the keys in their order.
	for _, ch := range []<-chan grant{plainWaiter, fifoFirst, fifoSecond} {
		select {
		case g := <-ch:
			t.Fatalf("a waiter returned while the key was held: %v, %v", g.lease, g.err)
		default:
		}
	}
	require.NoError(t, heldPlain.Unlock(ctx))
	require.NoError(t, heldFIFO.Unlock(ctx))
	g := <-plainWaiter
	require.NoError(t, g.err)
	require.Greater(t, g.lease.Fence(), heldPlain.Fence())
	require.NoError(t, g.lease.Unlock(ctx))
	g = <-fifoFirst
	require.NoError(t, g.err, "the first FIFO waiter")
	select {
	case g2 := <-fifoSecond:
		t.Fatalf("the second FIFO waiter got the key before the first released it: %v, %v", g2.lease, g2.err)
	default:
	}
	require.NoError(t, g.lease.Unlock(ctx))
	g = <-fifoSecond
	require.NoError(t, g.err, "the second FIFO waiter")
	require.NoError(t, g.lease.Unlock(ctx))
	requireAvailable(t, c.Client(t), []string{"long-plain:{mig}", "long-fifo:{mig}", "hot-plain:{mig}", "hot-fifo:{mig}"}, 10*time.Second)
}

// migFiller is the number of other keys in the migrated slot.
const migFiller = 3000

// requireAvailable waits until none of the Redis keys rkeys exists (nor
// the FIFO queue of one).
func requireAvailable(t testing.TB, c redis.UniversalClient, rkeys []string, within time.Duration) {
	t.Helper()
	var left []string
	deadline := time.Now().Add(within)
	for {
		left = left[:0]
		for _, k := range rkeys {
			n, err := c.Exists(context.Background(), k, k+":q").Result()
			if err != nil || n > 0 {
				left = append(left, fmt.Sprintf("%s (%d, %v)", k, n, err))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still held or queued after %v: %v", within, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// When the primary and the replica of a shard are down, calls on its keys
// fail with a transient error within the client's timeouts, and so, once
// the cluster has noticed, do calls on every other key (the cluster
// requires full coverage); once the shard is back, nothing is held. A
// paused shard receives requests whose replies never come: it runs them
// when it resumes, and what they took is released.
func TestClusterShardDown(t *testing.T) {
	c := redistest.StartCluster(t)
	const down = "down"
	up := otherShardKey(t, c, down)
	client := c.Client(t, func(o *redis.ClusterOptions) {
		o.ReadTimeout, o.WriteTimeout, o.DialTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	})
	plain, err := mutex.New(client, mutex.Config{Prefix: "down-plain", TTL: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { plain.Close() })
	fifo, err := mutex.New(client, mutex.Config{Prefix: "down-fifo", TTL: 5 * time.Second, FIFO: true})
	require.NoError(t, err)
	t.Cleanup(func() { fifo.Close() })
	rkeys := []string{"down-plain:{down}", "down-fifo:{down}", "down-plain:{" + up + "}", "down-fifo:{" + up + "}"}

	// fails runs op and checks that it fails, with a transient error,
	// within bound; it returns the error.
	fails := func(t *testing.T, what string, bound time.Duration, op func(context.Context) (mutex.Lease, error)) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		start := time.Now()
		l, err := op(ctx)
		took := time.Since(start)
		if err == nil {
			_ = l.Unlock(ctx)
			t.Errorf("%s succeeded", what)
			return nil
		}
		t.Logf("%s failed after %v with: %v", what, took.Round(time.Millisecond), err)
		assert.True(t, middleware.IsTransient(err), "%s: not transient per middleware.IsTransient: %v", what, err)
		assert.NotErrorIs(t, err, mutex.ErrNotObtained, "%s", what)
		assert.Less(t, took, bound, "%s took too long to fail", what)
		return err
	}
	// clusterDown waits until a call on a key of another shard fails too,
	// once the cluster has noticed the failure, and checks its error.
	clusterDown := func(t *testing.T) {
		t.Helper()
		var err error
		require.Eventually(t, func() bool {
			var l mutex.Lease
			l, err = plain.TryLock(t.Context(), up)
			if err == nil {
				_ = l.Unlock(t.Context())
			}
			return err != nil
		}, 15*time.Second, 50*time.Millisecond, "calls on the other shards kept working")
		t.Logf("TryLock on another shard then failed with: %v", err)
		assert.True(t, middleware.IsTransient(err), "not transient per middleware.IsTransient: %v", err)
		fails(t, "Lock (FIFO) on another shard", 10*time.Second, func(ctx context.Context) (mutex.Lease, error) { return fifo.Lock(ctx, up) })
	}
	// onDownShard runs the calls on the down shard's key at once.
	onDownShard := func(t *testing.T, bound time.Duration) {
		t.Helper()
		calls := map[string]func(context.Context) (mutex.Lease, error){
			"TryLock":        func(ctx context.Context) (mutex.Lease, error) { return plain.TryLock(ctx, down) },
			"Lock":           func(ctx context.Context) (mutex.Lease, error) { return plain.Lock(ctx, down) },
			"TryLock (FIFO)": func(ctx context.Context) (mutex.Lease, error) { return fifo.TryLock(ctx, down) },
			"Lock (FIFO)":    func(ctx context.Context) (mutex.Lease, error) { return fifo.Lock(ctx, down) },
		}
		var wg sync.WaitGroup
		for name, op := range calls {
			wg.Go(func() { fails(t, name, bound, op) })
		}
		wg.Wait()
	}
	usable := func(t *testing.T) {
		t.Helper()
		requireAvailable(t, client, rkeys, 15*time.Second)
		for _, m := range []*mutex.Mutex{plain, fifo} {
			for _, k := range []string{down, up} {
				l := must[mutex.Lease](t)(m.TryLock(t.Context(), k))
				require.NoError(t, l.Unlock(t.Context()))
			}
		}
	}
	usable(t)

	t.Run("killed", func(t *testing.T) {
		p, r := c.PrimaryFor(t, "{"+down+"}"), c.ReplicaFor(t, "{"+down+"}")
		p.Kill(t)
		r.Kill(t)
		onDownShard(t, 10*time.Second)
		clusterDown(t)
		c.Heal(t)
		usable(t)
	})

	t.Run("paused", func(t *testing.T) {
		p, r := c.PrimaryFor(t, "{"+down+"}"), c.ReplicaFor(t, "{"+down+"}")
		p.Pause(t)
		r.Pause(t)
		// go-redis tries a call on a silent node up to four times, half a
		// second each.
		onDownShard(t, 10*time.Second)
		clusterDown(t)
		p.Resume(t)
		r.Resume(t)
		c.Heal(t)
		usable(t)
		// The calls whose replies never came marked their tokens revoked
		// (see Lost replies in the package documentation).
		var mu sync.Mutex
		var markers []string
		require.NoError(t, client.ForEachMaster(t.Context(), func(ctx context.Context, n *redis.Client) error {
			ks, err := n.Keys(ctx, "down-*:x:*").Result()
			mu.Lock()
			markers = append(markers, ks...)
			mu.Unlock()
			return err
		}))
		t.Logf("%d revocation markers of calls given up: %v", len(markers), markers)
	})
}

// A ClusterClient pointing at a cluster that is not set up gets a clear
// error from every call, and no panic: nodes with --cluster-enabled but no
// slot assigned, nodes with only some slots assigned, and a server without
// cluster support.
func TestClusterHalfConfigured(t *testing.T) {
	var addrs []string
	var nodes []*redistest.Server
	for range 3 {
		s := redistest.Start(t, redistest.WithArgs("--cluster-enabled", "yes", "--cluster-node-timeout", "1000"))
		nodes = append(nodes, s)
		addrs = append(addrs, s.Addr())
	}
	// A key with a slot below 8192, and one above.
	low, high := "", ""
	for i := 0; low == "" || high == ""; i++ {
		k := fmt.Sprintf("k%d", i)
		if redistest.Slot(k) < 8192 {
			low = cmpOr(low, k)
		} else {
			high = cmpOr(high, k)
		}
	}

	// try runs every call on key and returns their errors.
	try := func(t *testing.T, addrs []string, key string) []error {
		t.Helper()
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		defer cc.Close()
		var errs []error
		for _, fifo := range []bool{false, true} {
			m, err := mutex.New(cc, mutex.Config{Prefix: "half", FIFO: fifo})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			calls := []struct {
				name string
				op   func() error
			}{
				{"TryLock", func() error { return unlocked(m.TryLock(ctx, key)) }},
				{"Lock", func() error { return unlocked(m.Lock(ctx, key)) }},
				{"Check", func() error { _, err := m.Check(ctx, key); return err }},
			}
			for _, call := range calls {
				start := time.Now()
				err := call.op()
				t.Logf("fifo=%v %s(%q): after %v: %v (IsTransient: %v)", fifo, call.name, key,
					time.Since(start).Round(time.Millisecond), err, middleware.IsTransient(err))
				assert.NotErrorIs(t, err, context.DeadlineExceeded, "%s waited for its context", call.name)
				errs = append(errs, err)
			}
			if !fifo {
				verr := m.Verify(ctx)
				t.Logf("Verify: %v", verr)
				assert.Error(t, verr, "Verify of a cluster that is not fully set up")
				assert.NotErrorIs(t, verr, mutex.ErrUnsafeServer)
			}
			cancel()
			require.NoError(t, m.Close())
		}
		return errs
	}
	allFail := func(t *testing.T, errs []error) {
		t.Helper()
		for _, err := range errs {
			assert.Error(t, err)
		}
	}

	t.Run("no slots", func(t *testing.T) {
		allFail(t, try(t, addrs, low))
	})

	// Slots 0-8191 on the first node, which meets the others; the rest
	// assigned to nobody.
	ctx := t.Context()
	admin := nodes[0].Client(t)
	require.NoError(t, admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 8191).Err())
	for _, n := range nodes[1:] {
		require.NoError(t, admin.ClusterMeet(ctx, "127.0.0.1", fmt.Sprint(n.Port())).Err())
	}
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			info, err := n.Client(t).ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_known_nodes:3") || !strings.Contains(info, "cluster_slots_assigned:8192") {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "the nodes did not meet")

	t.Run("some slots", func(t *testing.T) {
		t.Run("served slot", func(t *testing.T) { allFail(t, try(t, addrs, low)) })
		t.Run("unserved slot", func(t *testing.T) { allFail(t, try(t, addrs, high)) })
	})

	t.Run("some slots, partial coverage allowed", func(t *testing.T) {
		for _, n := range nodes {
			require.NoError(t, n.Client(t).ConfigSet(ctx, "cluster-require-full-coverage", "no").Err())
		}
		require.Eventually(t, func() bool {
			info, err := admin.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		}, 10*time.Second, 20*time.Millisecond, "the cluster did not become usable")
		for _, err := range try(t, addrs, low) {
			assert.NoError(t, err, "on a served slot")
		}
		allFail(t, try(t, addrs, high))
	})

	t.Run("cluster support disabled", func(t *testing.T) {
		allFail(t, try(t, []string{redistest.Shared(t).Addr()}, low))
	})
}

// unlocked unlocks the lease of a successful call, and returns the call's
// error.
func unlocked(l mutex.Lease, err error) error {
	if err != nil {
		return err
	}
	return l.Unlock(context.Background())
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

var _ = errors.Is
