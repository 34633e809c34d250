package mutex_test

import (
	"context"
	"slices"
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

// BenchmarkLockUnlock measures an uncontended Lock and Unlock. It reports
// the median time as a ratio to a PING round trip measured in the same run
// ("ping-ratio"), and the Redis commands (script-internal ones included) and
// round trips (EVALSHA calls) per Lock+Unlock.
func BenchmarkLockUnlock(b *testing.B) {
	srv := redistest.Shared(b)
	c := srv.Client(b)
	m := newMutex(b, srv, mutex.Config{Prefix: "bench-lock"})
	ctx := context.Background()
	for range 100 { // warm up connections and the script cache
		l, _ := m.Lock(ctx, "k")
		_ = l.Unlock(ctx)
	}
	ping := pingP50(b, c)
	if err := redistest.ResetStats(ctx, c); err != nil {
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, b.N)
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
	}
	b.StopTimer()
	stats, err := redistest.CommandStats(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(percentile(d, 50))/float64(ping), "ping-ratio")
	b.ReportMetric(float64(ping.Microseconds()), "ping-µs")
	b.ReportMetric(float64(commands(b, c)-1)/float64(b.N), "redis-cmds/op")
	b.ReportMetric(float64(stats["evalsha"])/float64(b.N), "round-trips/op")
}

// BenchmarkHandoff measures the time from Unlock in one Mutex to the grant
// in a waiter of another Mutex, each on its own connection, as a ratio to a
// PING round trip measured in the same run (p50 and p99).
func BenchmarkHandoff(b *testing.B) {
	srv := redistest.Shared(b)
	c := srv.Client(b)
	cfg := mutex.Config{Prefix: "bench-handoff", TTL: time.Minute}
	ms := [2]*mutex.Mutex{newMutex(b, srv, cfg), newMutex(b, srv, cfg)}
	ctx := context.Background()
	channel := cfg.Prefix + ":{k}"
	ping := pingP50(b, c)

	holder, err := ms[0].Lock(ctx, "k")
	if err != nil {
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		waiter := ms[(i+1)%2]
		type grant struct {
			at    time.Time
			lease mutex.Lease
			err   error
		}
		got := make(chan grant, 1)
		go func() {
			l, err := waiter.Lock(ctx, "k")
			got <- grant{time.Now(), l, err}
		}()
		// Unlock once the waiter listens for the release.
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
		time.Sleep(200 * time.Microsecond) // let its re-check attempt finish
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
	}
	b.StopTimer()
	_ = holder.Unlock(ctx)
	b.ReportMetric(float64(percentile(d, 50))/float64(ping), "p50-ping-ratio")
	b.ReportMetric(float64(percentile(d, 99))/float64(ping), "p99-ping-ratio")
	b.ReportMetric(float64(percentile(d, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(ping.Microseconds()), "ping-µs")
}
