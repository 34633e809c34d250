package mutex

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/redistest"
)

// BenchmarkDistinctKeys runs Lock+Unlock in a loop on goroutines that each
// lock a key of their own, through one Mutex, with its calls batched
// (batch=on) and each sent on its own (batch=off). It reports the pairs
// per second, and the ratio to PINGs per second from as many goroutines
// on the same client, measured just before.
func BenchmarkDistinctKeys(b *testing.B) {
	for _, goroutines := range []int{8, 64, 256} {
		for _, batched := range []bool{true, false} {
			name := fmt.Sprintf("goroutines=%d/batch=%v", goroutines, map[bool]string{true: "on", false: "off"}[batched])
			b.Run(name, func(b *testing.B) { benchDistinctKeys(b, goroutines, batched) })
		}
	}
}

func benchDistinctKeys(b *testing.B, goroutines int, batched bool) {
	srv := redistest.Shared(b)
	c := srv.Client(b)
	m, err := New(c, Config{Prefix: "bench-distinct"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	if !batched {
		m.batch.inFlightMax = 1 << 30
	}
	ctx := context.Background()
	run := func(n int, op func(g int) error) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for g := range goroutines {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if err := op(g); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	pings := max(b.N, 2000)
	pingTime := run(pings, func(int) error { return c.Ping(ctx).Err() })
	lockUnlock := func(g int) error {
		l, err := m.Lock(ctx, fmt.Sprint("k", g))
		if err != nil {
			return err
		}
		return l.Unlock(ctx)
	}
	run(goroutines*4, lockUnlock) // warm up
	cpu0, err := redistest.CPU(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	d := run(b.N, lockUnlock)
	b.StopTimer()
	cpu1, err := redistest.CPU(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	pairs := float64(b.N) / d.Seconds()
	b.ReportMetric(pairs, "pairs/s")
	b.ReportMetric(pairs/(float64(pings)/pingTime.Seconds()), "ping-ratio")
	// How busy Redis was: 1 when its one thread ran all along.
	b.ReportMetric((cpu1-cpu0).Seconds()/d.Seconds(), "redis-busy")
}
