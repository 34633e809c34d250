package middleware_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// envInt returns the integer in $name, or def.
func envInt(b *testing.B, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a positive integer", name, v)
		}
		return n
	}
	return def
}

// heapInUse returns the bytes of live heap objects after a full GC.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// lockAll takes one lease per key with 32 concurrent TryLocks.
func lockAll(b *testing.B, l mutex.Locker, keys []string) []mutex.Lease {
	leases := make([]mutex.Lease, len(keys))
	errs := make(chan error, 32)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(keys); i += 32 {
				lease, err := l.TryLock(context.Background(), keys[i])
				if err != nil {
					errs <- err
					return
				}
				leases[i] = lease
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return leases
}

func unlockAll(b *testing.B, leases []mutex.Lease) {
	for _, lease := range leases {
		if err := lease.Unlock(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAutoExtendSoak holds many leases (DISTLOCK_SOAK_LEASES, 10,000 by
// default) with a 3s TTL under AutoExtend for DISTLOCK_SOAK_SECONDS (10 by
// default; 60 for the full soak) and reports what the renewals cost:
//
//   - renewal-rt/s: Redis round trips per second spent on renewals (each
//     pipeline or single command the client sent counts once),
//   - renewals/s and renewals/rt: leases extended per second and per round
//     trip, against the TTL/3 schedule's need of leases/(TTL/3) per second,
//   - goroutines: goroutines added while the leases are held,
//   - B/lease: live heap per held lease, and autoextend-B/lease: the part of
//     it that AutoExtend adds to a plain lease measured in the same run.
//
// Run it with
//
//	DISTLOCK_SOAK_SECONDS=60 go test -run '^$' -bench AutoExtendSoak -benchtime 1x ./middleware
func BenchmarkAutoExtendSoak(b *testing.B) {
	n := envInt(b, "DISTLOCK_SOAK_LEASES", 10000)
	hold := time.Duration(envInt(b, "DISTLOCK_SOAK_SECONDS", 10)) * time.Second
	const ttl = 3 * time.Second

	srv := redistest.Start(b)
	c := srv.Client(b)
	hook := &countHook{}
	c.AddHook(hook)
	m := newMutex(b, c, mutex.Config{Prefix: "soak", TTL: ttl})
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("resource:%d", i)
	}
	// Warm up the pool and the script cache.
	unlockAll(b, lockAll(b, m, keys[:64]))

	for b.Loop() {
		// Baseline: plain leases.
		base := heapInUse()
		plain := lockAll(b, m, keys)
		plainBytes := float64(heapInUse()-base) / float64(n)
		unlockAll(b, plain)
		plain = nil

		s, err := middleware.NewScheduler(middleware.SchedulerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		l := middleware.AutoExtend(middleware.WithScheduler(s))(m)
		goroutines := runtime.NumGoroutine()
		base = heapInUse()
		leases := lockAll(b, l, keys)
		autoBytes := float64(heapInUse()-base) / float64(n)

		trips, renewals := hook.roundTrips(), s.Stats().Renewals
		start := time.Now()
		maxGoroutines := 0
		for time.Since(start) < hold {
			time.Sleep(100 * time.Millisecond)
			maxGoroutines = max(maxGoroutines, runtime.NumGoroutine()-goroutines)
		}
		elapsed := time.Since(start).Seconds()
		trips = hook.roundTrips() - trips
		st := s.Stats()
		renewals = st.Renewals - renewals
		for _, lease := range leases {
			if err := lease.Err(); err != nil {
				b.Fatalf("a lease was lost: %v", err)
			}
		}
		unlockAll(b, leases)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}

		b.ReportMetric(float64(trips)/elapsed, "renewal-rt/s")
		b.ReportMetric(float64(renewals)/elapsed, "renewals/s")
		b.ReportMetric(float64(renewals)/float64(trips), "renewals/rt")
		b.ReportMetric(float64(n)/(ttl/3).Seconds(), "needed-renewals/s")
		b.ReportMetric(float64(maxGoroutines), "goroutines")
		b.ReportMetric(autoBytes, "B/lease")
		b.ReportMetric(autoBytes-plainBytes, "autoextend-B/lease")
		b.ReportMetric(float64(st.Failures), "failures")
	}
}
