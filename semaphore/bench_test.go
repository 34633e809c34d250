package semaphore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/semaphore"
)

// grantsPerSecond runs n grants of key through lockers, spread over
// waiters goroutines, each holding its lease for hold, and returns the
// grants per second.
func grantsPerSecond(b *testing.B, lockers []mutex.Locker, key string, waiters, n int, hold time.Duration) float64 {
	b.Helper()
	ctx := context.Background()
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	start := time.Now()
	for g := range waiters {
		wg.Go(func() {
			l := lockers[g%len(lockers)]
			for left.Add(-1) >= 0 {
				lease, err := l.Lock(ctx, key)
				if err != nil {
					b.Error(err)
					return
				}
				if hold > 0 {
					time.Sleep(hold)
				}
				if err := lease.Unlock(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkGrants measures the grants per second of a semaphore key with
// 8 permits and 64 waiters spread over four Semaphores (each with its own
// client, as four processes would), against a mutex.Mutex key with the
// same waiters over four Mutexes, in the same run: "ratio" is the
// semaphore's rate over the mutex's. Each iteration is one grant of each.
// With a hold time, the permits let eight holders work at once; with none,
// the rate is bound by Redis round trips.
func BenchmarkGrants(b *testing.B) {
	const permits, waiters, instances = 8, 64, 4
	for _, fifo := range []bool{false, true} {
		for _, hold := range []time.Duration{0, time.Millisecond} {
			b.Run(fmt.Sprintf("fifo=%v/hold=%v", fifo, hold), func(b *testing.B) {
				srv := redistest.Shared(b)
				p := fmt.Sprintf("bench-sem:%v:%v", fifo, hold)
				var sems, mus []mutex.Locker
				for range instances {
					s, err := semaphore.New(srv.Client(b), semaphore.Config{Prefix: p, Permits: permits, FIFO: fifo})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { _ = s.Close() })
					sems = append(sems, s)
					m, err := mutex.New(srv.Client(b), mutex.Config{Prefix: p + ":mutex", FIFO: fifo})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { _ = m.Close() })
					mus = append(mus, m)
				}
				// Warm up connections, subscriptions and script caches.
				grantsPerSecond(b, sems, "k", waiters, 2*waiters, 0)
				grantsPerSecond(b, mus, "k", waiters, 2*waiters, 0)
				b.ResetTimer()
				sem := grantsPerSecond(b, sems, "k", waiters, b.N, hold)
				b.StopTimer()
				mu := grantsPerSecond(b, mus, "k", waiters, b.N, hold)
				b.ReportMetric(sem, "sem-grants/s")
				b.ReportMetric(mu, "mutex-grants/s")
				b.ReportMetric(sem/mu, "ratio")
			})
		}
	}
}
