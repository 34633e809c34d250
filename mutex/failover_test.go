package mutex_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
)

// Failover under a contended workload. Each test runs hot workloads (see
// hotload_test.go) on two hot keys (on a Cluster, on two shards), with 2
// plain and 2 FIFO Mutexes, each used raw and through middleware.Retry,
// and breaks the primary of the first key under them. It checks that no
// waiter is stranded (every Lock returns within hotLockTimeout), that every
// error a raw Mutex returned is transient per middleware.IsTransient (or
// ErrNotHeld for a lease lost in the failover), that no Retry-wrapped Lock
// failed, that
// fences keep their order, that no two leases of a key were valid at once
// (asserted for the graceful failover, logged for the kills), and that
// every Locker is granted a lease again after the failover. It logs the
// time from the primary's death to the next grant of each key, and the
// longest time without a grant on the other shard. Timings are logged,
// not asserted.

const (
	hotTTL = time.Second
	// hotLockTimeout bounds a Lock: the TTL, a failover of a few seconds
	// and a wide margin (a Sentinel election that fails is held again
	// 10s later, twice the harness' failover-timeout).
	hotLockTimeout = 30 * time.Second
	// hotProgressBound bounds the wait for every Locker to be granted a
	// lease after a failover.
	hotProgressBound = 20 * time.Second
)

func hotCfg(keys ...string) hotConfig {
	return hotConfig{keys: keys, lockTimeout: hotLockTimeout, hold: 2 * time.Millisecond, perLocker: 2}
}

// ctxTimeouts makes go-redis bound each call by its context.
func ctxTimeouts(o *redis.ClusterOptions) { o.ContextTimeoutEnabled = true }

// otherShardKey returns a key whose slot another primary serves than the
// one serving key.
func otherShardKey(t testing.TB, c *redistest.Cluster, key string) string {
	t.Helper()
	p := c.PrimaryFor(t, "{"+key+"}")
	for i := range 1000 {
		k := fmt.Sprintf("%s-other%d", key, i)
		if c.PrimaryFor(t, "{"+k+"}") != p {
			return k
		}
	}
	t.Fatal("no key found on another shard")
	return ""
}

// hotKeys names the lock identities of key in both modes.
func hotKeys(key string) []string { return []string{"hot-plain/" + key, "hot-fifo/" + key} }

func TestFailoverContendedCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	const hot = "hot"
	other := otherShardKey(t, c, hot)
	newLockers := func(t *testing.T) []*hotLocker {
		return newHotLockers(t, func() redis.UniversalClient { return c.Client(t, ctxTimeouts) }, hotTTL, 2, 2)
	}

	// The primary of the hot key dies; the cluster detects it (one second
	// of node timeout) and its replica takes over.
	t.Run("kill", func(t *testing.T) {
		lockers := newLockers(t)
		w := startHotLoad(lockers, hotCfg(hot, other))
		time.Sleep(500 * time.Millisecond)
		killed, took := c.KillPrimaryAt(t, "{"+hot+"}", true)
		back := time.Now()
		last := w.waitProgress(t, lockers, back, hotProgressBound)
		time.Sleep(200 * time.Millisecond)
		w.halt(t)
		t.Logf("replica promoted %v after the kill; cluster whole again after %v", took.Round(time.Millisecond), back.Sub(killed).Round(time.Millisecond))
		logNextGrant(t, w, killed, "the kill", hot)
		// With cluster-require-full-coverage (the default), the other
		// shards refuse every call too, from the moment the cluster
		// flags the dead primary until its replica takes over.
		for _, k := range hotKeys(other) {
			t.Logf("%s (another shard): longest time without a grant around the kill: %v", k,
				w.maxGap(killed, back, k).Round(time.Millisecond))
		}
		t.Logf("every Locker granted again %v after the kill", last.Sub(killed).Round(time.Millisecond))
		w.check(t, lockers, false)
	})

	// A graceful failover of the same shard: no acknowledged write is
	// lost, so exclusion must hold throughout.
	t.Run("graceful", func(t *testing.T) {
		lockers := newLockers(t)
		w := startHotLoad(lockers, hotCfg(hot, other))
		time.Sleep(500 * time.Millisecond)
		start := time.Now()
		took := c.Failover(t, "{"+hot+"}")
		back := time.Now()
		last := w.waitProgress(t, lockers, back, hotProgressBound)
		time.Sleep(200 * time.Millisecond)
		w.halt(t)
		t.Logf("graceful failover took %v", took.Round(time.Millisecond))
		for _, k := range hotKeys(hot) {
			t.Logf("%s: longest time without a grant around the failover: %v", k,
				w.maxGap(start.Add(-time.Second), back.Add(time.Second), k).Round(time.Millisecond))
		}
		t.Logf("every Locker granted again %v after the failover started", last.Sub(start).Round(time.Millisecond))
		w.check(t, lockers, true)
	})
}

func TestFailoverContendedSentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	const hot, other = "hot", "warm"
	lockers := newHotLockers(t, func() redis.UniversalClient {
		return s.FailoverClient(t, func(o *redis.FailoverOptions) { o.ContextTimeoutEnabled = true })
	}, hotTTL, 2, 2)
	w := startHotLoad(lockers, hotCfg(hot, other))
	time.Sleep(500 * time.Millisecond)
	killed, took := s.KillPrimaryAt(t)
	back := time.Now()
	last := w.waitProgress(t, lockers, back, hotProgressBound)
	time.Sleep(200 * time.Millisecond)
	w.halt(t)
	t.Logf("every sentinel named the new primary %v after the kill", took.Round(time.Millisecond))
	logNextGrant(t, w, killed, "the kill", hot)
	logNextGrant(t, w, killed, "the kill", other)
	t.Logf("every Locker granted again %v after the kill", last.Sub(killed).Round(time.Millisecond))
	w.check(t, lockers, false)
}

// logNextGrant logs the time from at to the first grant of key in each
// mode.
func logNextGrant(t testing.TB, w *hotLoad, at time.Time, what, key string) {
	t.Helper()
	for _, k := range hotKeys(key) {
		g, ok := w.firstGrantAfter(at, k)
		if !ok {
			t.Errorf("%s: no grant after %s", k, what)
			continue
		}
		t.Logf("%s: first grant %v after %s (granted by Redis; returned to %s %v after)", k,
			(time.Duration(g.fence-at.UnixMicro()) * time.Microsecond).Round(time.Millisecond), what,
			g.who, g.got.Sub(at).Round(time.Millisecond))
	}
}
