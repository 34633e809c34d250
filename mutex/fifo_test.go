package mutex_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

// queueLen returns the number of waiters queued in Redis for key.
func queueLen(t testing.TB, c redis.UniversalClient, prefix, key string) int64 {
	t.Helper()
	n, err := c.ZCard(context.Background(), prefix+":{"+key+"}:q").Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// drained checks that no key of prefix is left once the queues drained:
// the last deadline entries go with the next renewal.
func drained(t testing.TB, c redis.UniversalClient, prefix string) {
	t.Helper()
	assert.Eventually(t, func() bool { return len(keysLeft(t, c, prefix)) == 0 },
		mutex.FIFOLiveness, 10*time.Millisecond, "keys left after the queues drained")
	if left := keysLeft(t, c, prefix); len(left) > 0 {
		t.Logf("keys left: %q", left)
	}
}

func waitQueueLen(t testing.TB, c redis.UniversalClient, prefix, key string, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return queueLen(t, c, prefix, key) == n },
		10*time.Second, time.Millisecond, "queue of %q never reached %d", key, n)
}

func TestFIFOGrantOrder(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: true}
		holder := backendMutex(t, backend, cfg)
		ctx := t.Context()
		l := must[mutex.Lease](t)(holder.Lock(ctx, "k"))

		const n = 5
		order := make(chan int, n)
		var wg sync.WaitGroup
		for i := range n {
			m := backendMutex(t, backend, cfg)
			wg.Go(func() {
				l, err := m.Lock(ctx, "k")
				if !assert.NoError(t, err) {
					return
				}
				order <- i
				assert.NoError(t, l.Unlock(ctx))
			})
			waitQueueLen(t, c, cfg.Prefix, "k", int64(i+1))
		}
		// TryLock never jumps a non-empty queue, even when the lock is free.
		require.NoError(t, l.Unlock(ctx))
		wg.Wait()
		close(order)
		var got []int
		for i := range order {
			got = append(got, i)
		}
		assert.Equal(t, []int{0, 1, 2, 3, 4}, got)
		drained(t, c, cfg.Prefix)
	})
}

func TestFIFOTryLockDoesNotJumpQueue(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: true}
		a, b := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx := t.Context()

		l := must[mutex.Lease](t)(a.Lock(ctx, "k"))
		got := lockAsync(ctx, b, "k")
		waitQueueLen(t, c, cfg.Prefix, "k", 1)
		assert.Equal(t, mutex.Locked, must[mutex.Status](t)(a.Check(ctx, "k")))
		// Release with the queued waiter pending: a TryLock racing it must lose
		// whether or not the waiter has claimed the lock yet.
		require.NoError(t, l.Unlock(ctx))
		_, err := a.TryLock(ctx, "k")
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		assert.Equal(t, mutex.Locked, must[mutex.Status](t)(a.Check(ctx, "k")))
		g := <-got
		require.NoError(t, g.err)
		l2 := g.lease
		require.NoError(t, l2.Unlock(ctx))
		assert.Equal(t, mutex.Available, must[mutex.Status](t)(a.Check(ctx, "k")))
		l3 := must[mutex.Lease](t)(a.TryLock(ctx, "k"))
		assert.Greater(t, l3.Fence(), l2.Fence())
		require.NoError(t, l3.Unlock(ctx))
		drained(t, c, cfg.Prefix)
	})
}

func TestFIFOCancelledWaiterLeaves(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: true}
		holder, a, b := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx := t.Context()

		l := must[mutex.Lease](t)(holder.Lock(ctx, "k"))
		actx, cancel := context.WithCancel(ctx)
		agot := lockAsync(actx, a, "k")
		waitQueueLen(t, c, cfg.Prefix, "k", 1)
		bgot := lockAsync(ctx, b, "k")
		waitQueueLen(t, c, cfg.Prefix, "k", 2)

		cancel()
		err := (<-agot).err
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.ErrorIs(t, err, context.Canceled)
		// The cancelled waiter leaves the queue at once, not after its liveness
		// window.
		waitQueueLen(t, c, cfg.Prefix, "k", 1)
		require.NoError(t, l.Unlock(ctx))
		select {
		case g := <-bgot:
			require.NoError(t, g.err)
			require.NoError(t, g.lease.Unlock(ctx))
		case <-time.After(mutex.FIFOLiveness):
			t.Fatal("the waiter behind a cancelled one was not served promptly")
		}
		drained(t, c, cfg.Prefix)
	})
}

func TestFIFOHolderThatNeverUnlocks(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		cfg := mutex.Config{Prefix: prefix(t), TTL: 300 * time.Millisecond, FIFO: true}
		holder, w := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx := t.Context()

		crashed := must[mutex.Lease](t)(holder.Lock(ctx, "k"))
		got := must[mutex.Lease](t)(w.Lock(ctx, "k"))
		<-crashed.Done()
		assert.Greater(t, got.Fence(), crashed.Fence())
		require.NoError(t, got.Unlock(ctx))
		drained(t, c, cfg.Prefix)
	})
}

// TestFIFOHelperProcess is a waiter run in a child process by
// TestFIFOKilledWaiterIsSkipped.
func TestFIFOHelperProcess(t *testing.T) {
	url, prefix := os.Getenv("DISTLOCK_FIFO_CHILD_URL"), os.Getenv("DISTLOCK_FIFO_CHILD_PREFIX")
	if url == "" {
		return // only runs as the child of TestFIFOKilledWaiterIsSkipped
	}
	c, err := redisurl.Open(url)
	require.NoError(t, err)
	defer c.Close()
	m, err := mutex.New(c, mutex.Config{Prefix: prefix, TTL: time.Minute, FIFO: true})
	require.NoError(t, err)
	defer m.Close()
	_, _ = m.Lock(context.Background(), "k") // killed while waiting
	t.Fatal("the child waiter was granted the lock")
}

func TestFIFOKilledWaiterIsSkipped(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: true}
		holder, next := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx := t.Context()

		l := must[mutex.Lease](t)(holder.Lock(ctx, "k"))
		child := exec.Command(os.Args[0], "-test.run=^TestFIFOHelperProcess$", "-test.count=1")
		child.Env = append(os.Environ(), "DISTLOCK_FIFO_CHILD_URL="+backend.URL(t), "DISTLOCK_FIFO_CHILD_PREFIX="+cfg.Prefix)
		require.NoError(t, child.Start())
		t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
		waitQueueLen(t, c, cfg.Prefix, "k", 1)

		got := lockAsync(ctx, next, "k")
		waitQueueLen(t, c, cfg.Prefix, "k", 2)

		require.NoError(t, child.Process.Signal(syscall.SIGKILL))
		_ = child.Wait()
		killed := time.Now()
		require.NoError(t, l.Unlock(ctx))
		g := <-got
		require.NoError(t, g.err)
		stall := g.at.Sub(killed)
		t.Logf("queue stalled %v after the queued waiter was killed", stall)
		// The bound is FIFOLiveness plus one renewal period after the death;
		// allow generously for a loaded machine.
		assert.Less(t, stall, 3*mutex.FIFOLiveness)
		require.NoError(t, g.lease.Unlock(ctx))
		require.Eventually(t, func() bool { return len(keysLeft(t, c, cfg.Prefix)) == 0 },
			3*mutex.FIFOLiveness, 10*time.Millisecond, "keys left: %v", keysLeft(t, c, cfg.Prefix))
	})
}

func TestFIFOMultiKey(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: true}
		var ms []*mutex.Mutex
		for range 4 {
			ms = append(ms, backendMutex(t, backend, cfg))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()

		// Lock(a, b) excludes Lock(a).
		ab := must[mutex.Lease](t)(ms[0].Lock(ctx, "a", "b"))
		_, err := ms[1].TryLock(ctx, "a")
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.NoError(t, ab.Unlock(ctx))

		// Opposite key orders and single keys together: no deadlock, no overlap.
		holders := map[string]*atomic.Int32{"a": {}, "b": {}}
		sets := [][]string{{"a", "b"}, {"b", "a"}, {"a"}, {"b"}}
		var wg sync.WaitGroup
		for g := range 12 {
			wg.Go(func() {
				m := ms[g%len(ms)]
				keys := sets[g%len(sets)]
				for range 15 {
					l, err := m.Lock(ctx, keys...)
					if !assert.NoError(t, err) {
						return
					}
					for _, k := range keys {
						if holders[k].Add(1) != 1 {
							t.Errorf("two holders of %q", k)
						}
					}
					time.Sleep(100 * time.Microsecond)
					for _, k := range keys {
						holders[k].Add(-1)
					}
					assert.NoError(t, l.Unlock(ctx))
				}
			})
		}
		wg.Wait()
		require.NoError(t, ctx.Err(), "deadlock: the workload did not finish")
		drained(t, c, cfg.Prefix)
	})
}

// fifoRun makes waiters goroutines spread over mutexes take the lock grants
// times in all, each holding it for hold. It fails the test on overlap. It
// returns the tokens of the leases in grant order, and, for each grant after
// a warm-up of two grants per waiter (while the Mutexes subscribe), the
// number of grants that happened while the grantee waited.
func fifoRun(t testing.TB, ms []*mutex.Mutex, key string, waiters, grants int, hold time.Duration) (order []string, overtaken []int) {
	var (
		inside  atomic.Int32
		counter atomic.Int64
		mu      sync.Mutex
		wg      sync.WaitGroup
	)
	ctx := context.Background()
	for g := range waiters {
		wg.Go(func() {
			m := ms[g%len(ms)]
			for {
				before := counter.Load()
				if before >= int64(grants) {
					return
				}
				l, err := m.Lock(ctx, key)
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					t.Error("two holders at once")
				}
				mu.Lock()
				n := counter.Add(1)
				order = append(order, l.Token())
				if before >= int64(2*waiters) {
					overtaken = append(overtaken, int(n-1-before))
				}
				mu.Unlock()
				if hold > 0 {
					time.Sleep(hold)
				}
				inside.Add(-1)
				if err := l.Unlock(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return order, overtaken
}

// queueSnapshots records the queue of key every millisecond until stop is
// closed.
func queueSnapshots(t testing.TB, c redis.UniversalClient, prefix, key string, stop <-chan struct{}) <-chan [][]string {
	out := make(chan [][]string, 1)
	go func() {
		var snaps [][]string
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				out <- snaps
				return
			case <-tick.C:
			}
			q, err := c.ZRange(context.Background(), prefix+":{"+key+"}:q", 0, -1).Result()
			if err == nil && len(q) > 1 {
				snaps = append(snaps, q)
			}
		}
	}()
	return out
}

// reorderings counts the pairs of waiters seen queued in one order in a
// snapshot and granted in the other.
func reorderings(order []string, snaps [][]string) (pairs, bad int) {
	rank := make(map[string]int, len(order))
	for i, tok := range order {
		rank[tok] = i
	}
	for _, q := range snaps {
		for i := 1; i < len(q); i++ {
			a, aok := rank[q[i-1]]
			b, bok := rank[q[i]]
			if !aok || !bok {
				continue
			}
			pairs++
			if a > b {
				bad++
			}
		}
	}
	return pairs, bad
}

func TestFIFOManyWaitersNoOverlapNoReordering(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: true}
		var ms []*mutex.Mutex
		for range 4 {
			ms = append(ms, backendMutex(t, backend, cfg))
		}
		const waiters, grants = 64, 1000
		stop := make(chan struct{})
		snaps := queueSnapshots(t, c, cfg.Prefix, "k", stop)
		order, overtaken := fifoRun(t, ms, "k", waiters, grants, 0)
		close(stop)
		pairs, bad := reorderings(order, <-snaps)
		worst := 0
		for _, n := range overtaken {
			worst = max(worst, n)
		}
		t.Logf("%d grants; %d queued pairs checked, %d granted out of order; at most %d grants while one waiter waited",
			len(order), pairs, bad, worst)
		assert.Zero(t, bad, "waiters granted out of queue order")
		assert.Greater(t, pairs, 0, "no queue snapshot was taken")
		drained(t, c, cfg.Prefix)
	})
}

func TestFIFOCheck(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), FIFO: true}
		m := backendMutex(t, backend, cfg)
		ctx := t.Context()
		l := must[mutex.Lease](t)(m.Lock(ctx, "a"))
		assert.Equal(t, mutex.PartiallyLocked, must[mutex.Status](t)(m.Check(ctx, "a", "b")))
		assert.Equal(t, mutex.Locked, must[mutex.Status](t)(m.Check(ctx, "a")))
		require.NoError(t, l.Unlock(ctx))
		assert.Equal(t, mutex.Available, must[mutex.Status](t)(m.Check(ctx, "a", "b")))
	})
}

// A release hands the lock straight to the head of the queue; the new
// holder confirms the grant for the whole TTL in the background.
func TestFIFOHandOverIsConfirmed(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: true}
		a, b := backendMutex(t, backend, cfg), backendMutex(t, backend, cfg)
		ctx := t.Context()

		held := must[mutex.Lease](t)(a.Lock(ctx, "k"))
		got := lockAsync(ctx, b, "k")
		waitQueueLen(t, c, cfg.Prefix, "k", 1)
		require.NoError(t, held.Unlock(ctx))
		g := <-got
		require.NoError(t, g.err)
		l := g.lease
		require.NotNil(t, l)
		assert.Greater(t, l.Fence(), held.Fence())
		require.Eventually(t, func() bool {
			d, ok := mutex.Deadline(l)
			return ok && time.Until(d) > 30*time.Second
		}, 5*time.Second, time.Millisecond, "the grant was not confirmed for the TTL")
		pttl := must[time.Duration](t)(c.PTTL(ctx, cfg.Prefix+":{k}").Result())
		assert.Greater(t, pttl, 30*time.Second)
		require.NoError(t, l.Unlock(ctx))
		drained(t, c, cfg.Prefix)
	})
}

// A grant whose message is lost (the waiter's connections were cut) is
// found again by the waiter's claim after it reconnects.
func TestFIFOHandOverMessageLost(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: true}
	a := newMutex(t, srv, cfg)
	pc := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { pc.Close() })
	b, err := mutex.New(pc, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	held := must[mutex.Lease](t)(a.Lock(ctx, "k"))
	got := lockAsync(ctx, b, "k")
	waitQueueLen(t, c, cfg.Prefix, "k", 1)
	proxy.Pause()
	require.NoError(t, held.Unlock(ctx))
	handed := must[string](t)(c.Get(ctx, cfg.Prefix+":{k}").Result())
	proxy.CutAll()
	proxy.Resume()
	g := <-got
	require.NoError(t, g.err)
	l := g.lease
	require.NotNil(t, l)
	assert.Greater(t, l.Fence(), held.Fence())
	// The waiter holds the very lock handed to it, not a later grant.
	assert.Equal(t, handed, fmt.Sprintf("%s:%d", l.Token(), l.Fence()))
	require.NoError(t, l.Extend(ctx))
	require.NoError(t, l.Unlock(ctx))
	drained(t, c, cfg.Prefix)
}

// A waiter whose TTL is shorter than its wait finds the lock handed to it
// with too little validity left to trust; it takes it over for its whole
// TTL before returning.
func TestFIFOHandOverAfterALongWait(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		long := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: true}
		short := mutex.Config{Prefix: prefix(t), TTL: 100 * time.Millisecond, FIFO: true}
		a, b := backendMutex(t, backend, long), backendMutex(t, backend, short)
		ctx := t.Context()

		held := must[mutex.Lease](t)(a.Lock(ctx, "k"))
		got := lockAsync(ctx, b, "k")
		waitQueueLen(t, c, long.Prefix, "k", 1)
		time.Sleep(300 * time.Millisecond) // longer than b's TTL
		require.NoError(t, held.Unlock(ctx))
		handed := must[string](t)(c.Get(ctx, long.Prefix+":{k}").Result())
		g := <-got
		require.NoError(t, g.err)
		l := g.lease
		assert.Equal(t, handed, fmt.Sprintf("%s:%d", l.Token(), l.Fence()))
		require.NoError(t, l.Err())
		d, ok := mutex.Deadline(l)
		require.True(t, ok)
		assert.Greater(t, time.Until(d), time.Duration(0))
		require.NoError(t, l.Unlock(ctx))
		drained(t, c, long.Prefix)
	})
}
