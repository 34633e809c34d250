package mutex_test

import (
	"context"
	"errors"
	"fmt"
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

// primaryWithReplica starts a primary and a replica of it, in sync.
func primaryWithReplica(t *testing.T) (primary, replica *redistest.Server) {
	t.Helper()
	primary = redistest.Start(t)
	replica = redistest.Start(t, redistest.WithArgs("--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())))
	rc := replica.Client(t)
	require.Eventually(t, func() bool {
		info, _ := rc.Info(t.Context(), "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	}, 10*time.Second, 10*time.Millisecond, "the replica never synced")
	return primary, replica
}

func valueOf(l mutex.Lease) string { return l.Token() + ":" + strconv.FormatInt(l.Fence(), 10) }

// With Replicas set, a lease is returned only once the replica has the
// grant, in both modes, for a direct grant and for a FIFO handover; an
// Extend is acknowledged too.
func TestReplicasAcknowledgeGrants(t *testing.T) {
	primary, replica := primaryWithReplica(t)
	rc := replica.Client(t)
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			ctx := t.Context()
			cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: fifo, Replicas: 1}
			a, b := newMutex(t, primary, cfg), newMutex(t, primary, cfg)
			held := must[mutex.Lease](t)(a.Lock(ctx, "k"))
			assert.Equal(t, valueOf(held), rc.Get(ctx, cfg.Prefix+":{k}").Val(), "Lock returned before the replica had the grant")
			require.NoError(t, held.Extend(ctx))

			got := lockAsync(ctx, b, "k")
			time.Sleep(50 * time.Millisecond)
			require.NoError(t, held.Unlock(ctx))
			g := <-got
			require.NoError(t, g.err)
			assert.Equal(t, valueOf(g.lease), rc.Get(ctx, cfg.Prefix+":{k}").Val(), "Lock returned before the replica had the handover")
			require.NoError(t, g.lease.Unlock(ctx))
		})
	}
}

// Without the replicas' acknowledgement a grant is released and not
// returned, and an Extend ends the lease.
func TestReplicasMissing(t *testing.T) {
	primary, replica := primaryWithReplica(t)
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			ctx := t.Context()
			cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: fifo, Replicas: 1, ReplicaTimeout: 50 * time.Millisecond}
			m := newMutex(t, primary, cfg)
			held := must[mutex.Lease](t)(m.Lock(ctx, "held"))

			replica.Pause(t)
			defer replica.Resume(t)
			_, err := m.TryLock(ctx, "k")
			require.ErrorIs(t, err, mutex.ErrNotReplicated)
			require.NotErrorIs(t, err, mutex.ErrNotObtained)
			assert.Equal(t, 1, strings.Count(err.Error(), "mutex:"), "error text: %v", err)
			assert.Contains(t, err.Error(), "0 of 1 replicas acknowledged within 50ms")
			_, err = m.Lock(ctx, "k2")
			require.ErrorIs(t, err, mutex.ErrNotReplicated)

			err = held.Extend(ctx)
			require.ErrorIs(t, err, mutex.ErrNotReplicated)
			require.ErrorIs(t, err, mutex.ErrNotHeld)
			<-held.Done()
			require.ErrorIs(t, held.Err(), mutex.ErrNotHeld)

			// Nothing stays held: the grants and the lost lease are released.
			for _, k := range []string{"k", "k2", "held"} {
				require.Eventually(t, func() bool {
					st, err := m.Check(ctx, k)
					return err == nil && st == mutex.Available
				}, 5*time.Second, 10*time.Millisecond, "%s still held", k)
			}
		})
	}
	t.Run("more replicas than there are", func(t *testing.T) {
		m := newMutex(t, primary, mutex.Config{Prefix: prefix(t), Replicas: 2, ReplicaTimeout: 20 * time.Millisecond})
		_, err := m.TryLock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrNotReplicated)
		assert.Contains(t, err.Error(), "1 of 2 replicas")
	})
}

func TestReplicasBadConfig(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: redistest.SharedAddr()})
	defer c.Close()
	for _, cfg := range []mutex.Config{
		{Replicas: -1},
		{Replicas: 1, ReplicaTimeout: -time.Second},
		{Replicas: 1, ReplicaTimeout: time.Microsecond},
	} {
		_, err := mutex.New(c, cfg)
		require.ErrorIs(t, err, mutex.ErrInvalid, "%+v", cfg)
	}
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": redistest.SharedAddr()}})
	defer ring.Close()
	_, err := mutex.New(ring, mutex.Config{Replicas: 1})
	require.ErrorIs(t, err, mutex.ErrInvalid)
}

// A Sentinel failover right after a grant that the replica never received
// hands out a second lease while the first is valid, unless the Mutex
// waits for the replica's acknowledgement: then the first grant is refused,
// and the new primary grants nothing until a replica acknowledges it.
func TestReplicasSentinelFailover(t *testing.T) {
	for _, replicas := range []int{0, 1} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			s := redistest.StartSentinel(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cfg := mutex.Config{Prefix: prefix(t), TTL: 30 * time.Second, Replicas: replicas}
			newM := func() *mutex.Mutex {
				m, err := mutex.New(s.FailoverClient(t, func(o *redis.FailoverOptions) { o.ContextTimeoutEnabled = true }), cfg)
				require.NoError(t, err)
				t.Cleanup(func() { m.Close() })
				return m
			}
			a, b := newM(), newM()

			// The replica stops, and loses its link: the grant below never
			// reaches it.
			replica := s.Replica()
			replica.Pause(t)
			require.NoError(t, s.Primary().Client(t).ClientKillByFilter(ctx, "TYPE", "replica").Err())
			first, err := a.TryLock(ctx, "k")
			if replicas == 0 {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, mutex.ErrNotReplicated)
			}
			s.Primary().Kill(t)
			replica.Resume(t)
			took := s.KillPrimary(t)
			t.Logf("replica promoted %v after the primary died", took)

			// Lock again once the client has found the new primary.
			var second mutex.Lease
			require.Eventually(t, func() bool {
				short, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				second, err = b.TryLock(short, "k")
				return err == nil || errors.Is(err, mutex.ErrNotReplicated)
			}, 20*time.Second, 50*time.Millisecond, "no answer from the new primary: %v", err)
			if replicas == 0 {
				// Shown, not hidden: two valid leases of one key.
				require.NoError(t, err)
				defer second.Unlock(context.Background())
				require.NoError(t, first.Err())
				require.NoError(t, second.Err())
				t.Logf("two valid leases: fences %d and %d", first.Fence(), second.Fence())
				return
			}
			// The first grant was refused, so there is no first holder; and
			// the new primary, which has no replica yet, grants nothing
			// that a replica did not acknowledge.
			require.Nil(t, first)
			require.ErrorIs(t, err, mutex.ErrNotReplicated)
		})
	}
}

// On a Cluster, the acknowledgement comes from the replica of the key's
// own shard.
func TestReplicasCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	ctx := t.Context()
	cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, Replicas: 1}
	m, err := mutex.New(cluster.Client(t), cfg)
	require.NoError(t, err)
	defer m.Close()
	for _, k := range []string{"a", "b", "c", "d"} {
		l := must[mutex.Lease](t)(m.Lock(ctx, k))
		rkey := cfg.Prefix + ":{" + k + "}"
		// A replica answers reads of its own slots on a READONLY
		// connection.
		replica := cluster.ReplicaFor(t, rkey).Client(t).Conn()
		require.NoError(t, replica.ReadOnly(ctx).Err())
		assert.Equal(t, valueOf(l), replica.Get(ctx, rkey).Val(), "key %s", k)
		require.NoError(t, replica.Close())
		require.NoError(t, l.Extend(ctx))
		require.NoError(t, l.Unlock(ctx))
	}
	// The slot of a key moves, behind the back of the Mutex's client: the
	// grant goes to the new owner through go-redis's redirection, and its
	// confirmation follows it there, though go-redis's map of the cluster
	// is behind.
	for i, k := range []string{"a", "b", "c"} {
		rkey := cfg.Prefix + ":{" + k + "}"
		from := cluster.PrimaryFor(t, rkey)
		primaries := cluster.Primaries(t)
		to := primaries[i%len(primaries)]
		if to == from {
			to = primaries[(i+1)%len(primaries)]
		}
		cluster.MigrateSlot(t, redistest.Slot(rkey), to)
		l, err := m.Lock(ctx, k)
		require.NoError(t, err, "Lock of %s right after its slot moved", k)
		require.NoError(t, l.Extend(ctx))
		require.NoError(t, l.Unlock(ctx))
	}
}

// BenchmarkReplicas measures Lock+Unlock with Replicas: 1 against the same
// with Replicas: 0, alternately on one primary with one replica in the same
// run: "replicas-ratio" is the ratio of their medians, "added-µs" the
// difference, "ping-µs" the PING round trip for scale.
func BenchmarkReplicas(b *testing.B) {
	primary := redistest.Start(b)
	replica := redistest.Start(b, redistest.WithArgs("--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())))
	ctx := context.Background()
	for {
		info, _ := replica.Client(b).Info(ctx, "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := primary.Client(b)
	off, err := mutex.New(c, mutex.Config{Prefix: "bench-rep"})
	if err != nil {
		b.Fatal(err)
	}
	on, err := mutex.New(c, mutex.Config{Prefix: "bench-rep", Replicas: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { off.Close(); on.Close() })
	cycle := func(m *mutex.Mutex) time.Duration {
		start := time.Now()
		l, err := m.Lock(ctx, "k")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for range 100 {
		cycle(off)
		cycle(on)
	}
	ds, dr := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		ds = append(ds, cycle(off))
		dr = append(dr, cycle(on))
	}
	b.StopTimer()
	p0, p1 := percentile(ds, 50), percentile(dr, 50)
	b.ReportMetric(float64(p1)/float64(p0), "replicas-ratio")
	b.ReportMetric(float64((p1 - p0).Microseconds()), "added-µs")
	b.ReportMetric(float64(pingP50(b, c).Microseconds()), "ping-µs")
}

// A FIFO handover that the replica does not acknowledge is not returned:
// the waiter's Lock fails with ErrNotReplicated, and the key is released,
// not left to the waiter's token.
func TestReplicasMissingAtHandover(t *testing.T) {
	primary, replica := primaryWithReplica(t)
	ctx := t.Context()
	cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: true, Replicas: 1, ReplicaTimeout: 50 * time.Millisecond}
	a, b := newMutex(t, primary, cfg), newMutex(t, primary, cfg)
	held := must[mutex.Lease](t)(a.Lock(ctx, "k"))
	got := lockAsync(ctx, b, "k")
	time.Sleep(50 * time.Millisecond)

	replica.Pause(t)
	defer replica.Resume(t)
	require.NoError(t, held.Unlock(ctx))
	g := <-got
	require.ErrorIs(t, g.err, mutex.ErrNotReplicated)
	require.Nil(t, g.lease)
	require.Eventually(t, func() bool {
		st, err := a.Check(ctx, "k")
		return err == nil && st == mutex.Available
	}, 5*time.Second, 10*time.Millisecond, "the handed-over key is still held")
}
