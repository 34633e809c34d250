package mutex_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// pingP50 measures the median PING round trip of c, the baseline that the
// benchmarks report their figures against.
func pingP50(b *testing.B, c *redis.Client) time.Duration {
	b.Helper()
	ctx := context.Background()
	d := make([]time.Duration, 2000)
	for i := range d {
		start := time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		d[i] = time.Since(start)
	}
	return percentile(d, 50)
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func commands(b *testing.B, c *redis.Client) int64 {
	b.Helper()
	stats, err := redistest.CommandStats(context.Background(), c)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for name, calls := range stats {
		if name != "config|resetstat" && name != "config" && name != "info" && name != "ping" {
			n += calls
		}
	}
	return n
}

// BenchmarkLockUnlock measures an uncontended Lock and Unlock. Each
// iteration also times one PING round trip, and two PINGs in a row, on the
// same client, so that the median Lock+Unlock is reported as a ratio to the
// median PING ("ping-ratio") and to the median of two sequential PINGs
// ("two-pings-ratio"), both taken under the same conditions. It also
// reports the Redis commands (script-internal ones included) and round trips
// (EVALSHA calls) per Lock+Unlock.
func BenchmarkLockUnlock(b *testing.B) {
	srv := redistest.Shared(b)
	c := srv.Client(b)
	m, err := mutex.New(c, mutex.Config{Prefix: "bench-lock"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	ctx := context.Background()
	for range 100 { // warm up connections and the script cache
		l, _ := m.Lock(ctx, "k")
		_ = l.Unlock(ctx)
	}
	if err := redistest.ResetStats(ctx, c); err != nil {
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, b.N)
	pings := make([]time.Duration, 0, b.N)
	twoPings := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		l, err := m.Lock(ctx, "k")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))

		b.StopTimer()
		start = time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		pings = append(pings, time.Since(start))
		start = time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		twoPings = append(twoPings, time.Since(start))
		b.StartTimer()
	}
	b.StopTimer()
	stats, err := redistest.CommandStats(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	ping := percentile(pings, 50)
	b.ReportMetric(float64(percentile(d, 50))/float64(ping), "ping-ratio")
	b.ReportMetric(float64(percentile(d, 50))/float64(percentile(twoPings, 50)), "two-pings-ratio")
	b.ReportMetric(float64(ping.Microseconds()), "ping-µs")
	b.ReportMetric(float64(commands(b, c)-1)/float64(b.N), "redis-cmds/op")
	b.ReportMetric(float64(stats["evalsha"])/float64(b.N), "round-trips/op")
}

// BenchmarkHandoff measures the time from Unlock in one Mutex to the grant
// in a waiter of another Mutex, each on its own connection, as a ratio to a
// PING round trip measured in the same run (p50 and p99). Because the waiter
// sleeps until the release, the time includes waking an idle process; so
// each iteration also measures the floor of any pub/sub handoff under the
// same conditions, a PUBLISH reaching an idle subscriber that then makes
// one round trip, and reports the handoff's p50 as a ratio to that too.
func BenchmarkHandoff(b *testing.B) {
	srv := redistest.Shared(b)
	c := srv.Client(b)
	cfg := mutex.Config{Prefix: "bench-handoff", TTL: time.Minute}
	ms := [2]*mutex.Mutex{newMutex(b, srv, cfg), newMutex(b, srv, cfg)}
	ctx := context.Background()
	channel := cfg.Prefix + ":{k}"

	floorOnce := floorProbe(b, srv, c)

	holder, err := ms[0].Lock(ctx, "k")
	if err != nil {
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, b.N)
	floor := make([]time.Duration, 0, b.N)
	pings := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		waiter := ms[(i+1)%2]
		got := lockAsync(ctx, waiter, "k")
		// Unlock once the waiter listens for the release and is idle.
		for {
			n, err := c.PubSubNumSub(ctx, channel).Result()
			if err != nil {
				b.Fatal(err)
			}
			if n[channel] > 0 {
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		time.Sleep(time.Millisecond)
		start := time.Now()
		if err := holder.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		g := <-got
		if g.err != nil {
			b.Fatal(g.err)
		}
		d = append(d, g.at.Sub(start))
		holder = g.lease

		b.StopTimer()
		floor = append(floor, floorOnce())
		start = time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		pings = append(pings, time.Since(start))
		b.StartTimer()
	}
	b.StopTimer()
	_ = holder.Unlock(ctx)
	ping := percentile(pings, 50)
	b.ReportMetric(float64(percentile(d, 50))/float64(ping), "p50-ping-ratio")
	b.ReportMetric(float64(percentile(d, 99))/float64(ping), "p99-ping-ratio")
	b.ReportMetric(float64(percentile(d, 50))/float64(percentile(floor, 50)), "p50-floor-ratio")
	b.ReportMetric(float64(percentile(d, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(floor, 50).Microseconds()), "floor-µs")
	b.ReportMetric(float64(ping.Microseconds()), "ping-µs")
}

// floorProbe returns a function that measures the floor of a pub/sub
// handoff: after a millisecond idle, a PUBLISH from c reaches a subscriber on
// its own connection, which then makes one round trip.
func floorProbe(b *testing.B, srv *redistest.Server, c *redis.Client) func() time.Duration {
	return pubsubFloor(b, c, srv.Client(b), false)
}

// BenchmarkContended reproduces a hot key: the lock is held hold per grant
// by waiters goroutines spread over four Mutexes, each on its own
// connection. It reports the handoff time (Unlock → next grant) at p50 and
// p99 as ratios to a PING round trip of the same run, the p50 as a ratio to
// the floor of a pub/sub handoff (see floorProbe), the lock utilization
// (time held ÷ wall time), the Redis commands per grant (script-internal
// ones included) and the most grants that happened while one waiter waited.
func BenchmarkContended(b *testing.B) {
	for _, fifo := range []bool{false, true} {
		for _, waiters := range []int{16, 64, 256} {
			name := fmt.Sprintf("fifo=%v/waiters=%d", fifo, waiters)
			b.Run(name, func(b *testing.B) { benchContended(b, fifo, waiters, 5*time.Millisecond) })
		}
	}
}

func benchContended(b *testing.B, fifo bool, waiters int, hold time.Duration) {
	srv := redistest.Shared(b)
	c := srv.Client(b)
	cfg := mutex.Config{Prefix: fmt.Sprintf("bench-contended-%v-%d", fifo, waiters), TTL: 10 * time.Second, FIFO: fifo}
	var ms []*mutex.Mutex
	for range 4 {
		ms = append(ms, newMutex(b, srv, cfg))
	}
	ctx := context.Background()
	ping := pingP50(b, c)
	probe := floorProbe(b, srv, c)
	floors := make([]time.Duration, 200)
	for i := range floors {
		floors[i] = probe()
	}
	floor := percentile(floors, 50)
	// Warm up: every waiter subscribes and takes the lock once.
	fifoRun(b, ms, "k", waiters, 2*waiters, 0)
	if err := redistest.ResetStats(ctx, c); err != nil {
		b.Fatal(err)
	}
	grants := max(b.N, 2*waiters)
	type event struct{ granted, unlocking time.Time }
	var (
		mu        sync.Mutex
		events    = make([]event, 0, grants)
		counter   atomic.Int64
		overtaken int
		wg        sync.WaitGroup
	)
	b.ResetTimer()
	for g := range waiters {
		wg.Go(func() {
			m := ms[g%len(ms)]
			for {
				before := counter.Load()
				if before >= int64(grants) {
					return
				}
				l, err := m.Lock(ctx, "k")
				if err != nil {
					b.Error(err)
					return
				}
				granted := time.Now()
				n := counter.Add(1)
				time.Sleep(hold)
				unlocking := time.Now()
				mu.Lock()
				events = append(events, event{granted, unlocking})
				overtaken = max(overtaken, int(n-1-before))
				mu.Unlock()
				if err := l.Unlock(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	slices.SortFunc(events, func(x, y event) int { return x.granted.Compare(y.granted) })
	var held time.Duration
	handoffs := make([]time.Duration, 0, len(events))
	for i, e := range events {
		held += e.unlocking.Sub(e.granted)
		if i > 0 {
			handoffs = append(handoffs, e.granted.Sub(events[i-1].unlocking))
		}
	}
	wall := events[len(events)-1].unlocking.Sub(events[0].granted)
	b.ReportMetric(float64(percentile(handoffs, 50))/float64(ping), "p50-ping-ratio")
	b.ReportMetric(float64(percentile(handoffs, 99))/float64(ping), "p99-ping-ratio")
	b.ReportMetric(float64(percentile(handoffs, 50))/float64(floor), "p50-floor-ratio")
	b.ReportMetric(float64(percentile(handoffs, 99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(floor.Microseconds()), "floor-µs")
	b.ReportMetric(float64(held)/float64(wall), "utilization")
	b.ReportMetric(float64(commands(b, c)-1)/float64(len(events)), "redis-cmds/grant")
	b.ReportMetric(float64(overtaken), "max-grants-while-waiting")
	b.ReportMetric(float64(ping.Microseconds()), "ping-µs")
}
