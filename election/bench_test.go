package election_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
)

// median returns the median of d.
func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// pingMedian measures the median PING round trip of c, the baseline of
// the latency figures.
func pingMedian(b *testing.B, c redis.UniversalClient) time.Duration {
	b.Helper()
	d := make([]time.Duration, 500)
	for i := range d {
		start := time.Now()
		if err := c.Ping(context.Background()).Err(); err != nil {
			b.Fatal(err)
		}
		d[i] = time.Since(start)
	}
	return median(d)
}

// BenchmarkFailover kills the leader, a candidate in a child process, and
// measures how long until another candidate's term is observed, as a
// ratio to the TTL ("failover/ttl", median and max over the iterations).
// Each iteration starts one more candidate, so that one always waits.
// Expect a little under 1: the killed leader's lease was last extended up
// to a third of the TTL before the kill.
func BenchmarkFailover(b *testing.B) {
	srv := redistest.Shared(b)
	p := fmt.Sprintf("bench-failover:%d", time.Now().UnixNano())
	const ttl = 500 * time.Millisecond
	watcher := newElection(b, srv.Client(b), p, ttl)
	obs := watcher.Observe(b.Context(), "leader")
	children := candidates(b, srv.URL(), p, ttl, 0, 2)
	l := next(b, obs, 10*time.Second)
	var took []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for v, c := range candidates(b, srv.URL(), p, ttl, 2+i, 1) {
			children[v] = c
		}
		time.Sleep(ttl / 2) // the newest candidate waits, the lease was extended
		b.StartTimer()
		killed := children[l.Value].Kill(b)
		delete(children, l.Value)
		nl := next(b, obs, 10*time.Second)
		took = append(took, time.Since(killed))
		if nl.Fence <= l.Fence {
			b.Fatalf("term %d after %d", nl.Fence, l.Fence)
		}
		l = nl
	}
	b.StopTimer()
	b.ReportMetric(float64(median(took))/float64(ttl), "failover/ttl")
	b.ReportMetric(float64(slices.Max(took))/float64(ttl), "max-failover/ttl")
}

// BenchmarkObserve measures, per iteration, an uncontended Campaign and the
// delivery of its leader to an observer on another client, and reports
// the median times from the start of the Campaign to its return
// ("campaign-ping-ratio") and to the delivery ("observe-ping-ratio"), and
// from the return to the delivery ("delivery-ping-ratio"), as ratios to
// the median PING round trip measured in the same run.
func BenchmarkObserve(b *testing.B) {
	srv := redistest.Shared(b)
	p := fmt.Sprintf("bench-observe:%d", time.Now().UnixNano())
	c := srv.Client(b)
	e := newElection(b, c, p, 5*time.Second)
	watcher := newElection(b, srv.Client(b), p, 5*time.Second)
	ctx := b.Context()
	obs := watcher.Observe(ctx, "n")
	var campaign, observe, delivery []time.Duration
	warm := func() {
		t, err := e.Campaign(ctx, "n", "v")
		if err != nil {
			b.Fatal(err)
		}
		next(b, obs, 5*time.Second)
		_ = t.Resign(ctx)
	}
	for range 20 {
		warm()
	}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		t, err := e.Campaign(ctx, "n", "v")
		if err != nil {
			b.Fatal(err)
		}
		campaign = append(campaign, time.Since(start))
		next(b, obs, 5*time.Second)
		observe = append(observe, time.Since(start))
		delivery = append(delivery, observe[len(observe)-1]-campaign[len(campaign)-1])
		b.StopTimer()
		if err := t.Resign(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	ping := pingMedian(b, c)
	b.ReportMetric(float64(median(campaign))/float64(ping), "campaign-ping-ratio")
	b.ReportMetric(float64(median(observe))/float64(ping), "observe-ping-ratio")
	b.ReportMetric(float64(median(delivery))/float64(ping), "delivery-ping-ratio")
	b.ReportMetric(float64(ping.Microseconds()), "ping-µs")
}
