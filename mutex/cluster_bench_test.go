package mutex_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// Figures for Redis Cluster against one standalone server, each
// sub-benchmark named backend=standalone or backend=cluster so that both run
// in one `go test -bench` run. The cluster is SharedCluster (three
// primaries and three replicas); the standalone server is Shared. All the
// servers run on the machine of the benchmark, so on a machine with few
// cores they compete with each other and with the client for the CPU.

// benchBackends are the deployments compared.
var benchBackends = []string{"standalone", "cluster"}

// benchClient returns a new client of the backend.
func benchClient(b *testing.B, backend string) redis.UniversalClient {
	if backend == "cluster" {
		return redistest.SharedCluster(b).Client(b)
	}
	return redistest.Shared(b).Client(b)
}

// benchFigures keeps the figure of each backend from its last run, so that
// the cluster's sub-benchmark can report its ratio to the standalone one
// that ran before it.
var benchFigures sync.Map

func reportRatio(b *testing.B, name, backend string, v float64, unit string) {
	benchFigures.Store(name+"/"+backend, v)
	if backend != "cluster" {
		return
	}
	if s, ok := benchFigures.Load(name + "/standalone"); ok && s.(float64) > 0 {
		b.ReportMetric(v/s.(float64), unit)
	}
}

// BenchmarkClusterDistinctKeys measures the throughput of Lock+Unlock by
// many goroutines at once (8 per GOMAXPROCS), each on a key of its own, on
// one Mutex: "ops/s" is the rate of Lock+Unlock pairs, and on the cluster
// "x-standalone" its ratio to the rate on the standalone server.
func BenchmarkClusterDistinctKeys(b *testing.B) {
	for _, backend := range benchBackends {
		b.Run("backend="+backend, func(b *testing.B) {
			m, err := mutex.New(benchClient(b, backend), mutex.Config{Prefix: "bench-distinct"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { m.Close() })
			ctx := context.Background()
			for i := range 64 { // connections and script caches
				l, err := m.Lock(ctx, "warm"+strconv.Itoa(i))
				if err != nil {
					b.Fatal(err)
				}
				_ = l.Unlock(ctx)
			}
			var next atomic.Int64
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				key := "k" + strconv.FormatInt(next.Add(1), 10)
				for pb.Next() {
					l, err := m.Lock(ctx, key)
					if err != nil {
						b.Error(err)
						return
					}
					if err := l.Unlock(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
			ops := float64(b.N) / time.Since(start).Seconds()
			b.StopTimer()
			b.ReportMetric(ops, "ops/s")
			b.ReportMetric(float64(next.Load()), "goroutines")
			reportRatio(b, "distinct", backend, ops, "x-standalone")
		})
	}
}

// BenchmarkClusterHandoff measures the time from Unlock by a holder to the
// return of Lock in a waiter of another Mutex, on another client, on the
// same key, in the style of BenchmarkHandoff: p50 and p99 in µs, the PING
// round trip to the key's primary for scale, and on the cluster the ratio
// of its p50 to the standalone one. In FIFO mode the release hands the key
// over and wakes the waiter through its Mutex's wake channel (on a
// Cluster, the key's own, in its slot).
func BenchmarkClusterHandoff(b *testing.B) {
	for _, fifo := range []bool{false, true} {
		for _, backend := range benchBackends {
			b.Run(fmt.Sprintf("fifo=%v/backend=%s", fifo, backend), func(b *testing.B) {
				benchClusterHandoff(b, backend, fifo)
			})
		}
	}
}

func benchClusterHandoff(b *testing.B, backend string, fifo bool) {
	ctx := context.Background()
	cfg := mutex.Config{Prefix: fmt.Sprintf("bench-handoff-%v", fifo), TTL: time.Minute, FIFO: fifo}
	var ms [2]*mutex.Mutex
	for i := range ms {
		m, err := mutex.New(benchClient(b, backend), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		ms[i] = m
	}
	const key = "k"
	rkey := cfg.Prefix + ":{" + key + "}"
	probe := benchClient(b, backend)
	// node is the server of the key, whose PING round trip is reported
	// for scale.
	var node redis.Cmdable = probe
	cc, isCluster := probe.(*redis.ClusterClient)
	if isCluster {
		n, err := cc.MasterForKey(ctx, rkey)
		if err != nil {
			b.Fatal(err)
		}
		node = n
	}
	// subscribers counts the subscribers of the key's channel: on a
	// Cluster, sharded subscribers on the key's primary.
	subscribers := func() int64 {
		if isCluster {
			n, err := node.(*redis.Client).PubSubShardNumSub(ctx, rkey).Result()
			if err != nil {
				b.Fatal(err)
			}
			return n[rkey]
		}
		n, err := probe.PubSubNumSub(ctx, rkey).Result()
		if err != nil {
			b.Fatal(err)
		}
		return n[rkey]
	}
	// waiting reports whether a waiter is ready for the release: subscribed
	// to the key's channel, or queued for the key in FIFO mode (which it
	// joins once subscribed to its wake channel).
	waiting := func() bool {
		if fifo {
			n, err := probe.ZCard(ctx, rkey+":q").Result()
			if err != nil {
				b.Fatal(err)
			}
			return n > 0
		}
		return subscribers() > 0
	}

	// floor measures a release announcement on the key's server reaching
	// an idle subscriber, which then makes one round trip: PUBLISH, or on a
	// Cluster SPUBLISH to a sharded subscriber of the key's primary.
	var floor func() time.Duration
	if isCluster {
		floor = pubsubFloor(b, node, node.(*redis.Client), true)
	} else {
		floor = pubsubFloor(b, node, redistest.Shared(b).Client(b), false)
	}

	holder, err := ms[0].Lock(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, b.N)
	pings := make([]time.Duration, 0, b.N)
	floors := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		got := lockAsync(ctx, ms[(i+1)%2], key)
		for !waiting() {
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
		start = time.Now()
		if err := node.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		pings = append(pings, time.Since(start))
		floors = append(floors, floor())
		b.StartTimer()
	}
	b.StopTimer()
	_ = holder.Unlock(ctx)
	p50 := percentile(d, 50)
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(d, 90).Microseconds()), "p90-µs")
	b.ReportMetric(float64(percentile(d, 99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(percentile(pings, 50).Microseconds()), "ping-µs")
	b.ReportMetric(float64(percentile(floors, 50).Microseconds()), "floor-p50-µs")
	b.ReportMetric(float64(percentile(floors, 99).Microseconds()), "floor-p99-µs")
	reportRatio(b, fmt.Sprintf("handoff-fifo=%v", fifo), backend, float64(p50), "p50-x-standalone")
}

// BenchmarkClusterFailoverToGrant measures, over several failovers (b.N,
// and at least failoverRuns), the time from the death of the primary of a
// hot key to the next grant of that key, while a hot workload (see
// hotload_test.go: 2 plain and 2 FIFO Mutexes, raw and through Retry,
// holders retrying Unlock on transient errors) contends for it:
//
//   - backend=cluster/promote=forced: the harness promotes the replica at
//     once (CLUSTER FAILOVER FORCE), so the figure is the clients' own
//     recovery;
//   - backend=cluster/promote=detected: the cluster notices the death
//     after its node timeout (1s here; 15s by default) and the replica
//     wins an election;
//   - backend=cluster/promote=graceful: a CLUSTER FAILOVER with the
//     primary alive; the figure is the longest time without a grant of
//     the key around it;
//   - backend=sentinel: the sentinels notice the death after
//     down-after-milliseconds (1s here; 30s by default) and promote the
//     replica.
//
// Failovers of one shard are spaced out so that each gets a prompt
// election: a Cluster primary votes for the replicas of a given primary at
// most once per two node timeouts, and a sentinel starts no failover of a
// primary within twice the failover-timeout (5s here; 3 minutes by
// default) of the last one it started or voted for. Back to back, they
// take one more election timeout (seen: 4s on the Cluster, 10s with
// Sentinel), or, graceful, time out.
//
// It reports p50 and max in ms of the first grant (by fence, the server's
// clock at the grant) in either mode ("grant"), of the time until every
// Locker of the workload got a lease again ("all"), and of the promotion
// as the harness saw it ("promoted"). The ns/op figure is the time of a
// whole run.
func BenchmarkClusterFailoverToGrant(b *testing.B) {
	b.Run("backend=cluster", func(b *testing.B) {
		for _, promote := range []string{"forced", "detected", "graceful"} {
			b.Run("promote="+promote, func(b *testing.B) {
				c := redistest.StartCluster(b)
				const hot = "hot"
				runs := max(b.N, failoverRuns)
				fig := newFailoverFigures()
				var last time.Time
				for range runs {
					// A primary votes for a replica of a given primary at
					// most once per two node timeouts, so a failover of
					// the shard that soon after the last one would wait
					// for another election (or, graceful, time out).
					time.Sleep(time.Until(last.Add(clusterVoteGap)))
					lockers := newHotLockers(b, func() redis.UniversalClient { return c.Client(b, ctxTimeouts) }, hotTTL, 2, 2)
					w := startHotLoad(lockers, hotCfg(hot))
					time.Sleep(300 * time.Millisecond)
					var at time.Time
					var took time.Duration
					if promote == "graceful" {
						at = time.Now()
						took = c.Failover(b, "{"+hot+"}")
					} else {
						at, took = c.KillPrimaryAt(b, "{"+hot+"}", promote == "detected")
					}
					last = time.Now()
					fig.add(b, w, lockers, hot, at, took, promote == "graceful")
					w.halt(b)
					closeLockers(lockers)
				}
				fig.report(b)
			})
		}
	})
	b.Run("backend=sentinel", func(b *testing.B) {
		s := redistest.StartSentinel(b)
		const hot = "hot"
		runs := max(b.N, failoverRuns)
		fig := newFailoverFigures()
		var last time.Time
		for range runs {
			// A sentinel starts no failover of a primary within twice the
			// failover-timeout of the last one it started or voted for.
			time.Sleep(time.Until(last.Add(sentinelVoteGap)))
			lockers := newHotLockers(b, func() redis.UniversalClient {
				return s.FailoverClient(b, func(o *redis.FailoverOptions) { o.ContextTimeoutEnabled = true })
			}, hotTTL, 2, 2)
			w := startHotLoad(lockers, hotCfg(hot))
			time.Sleep(300 * time.Millisecond)
			at, took := s.KillPrimaryAt(b)
			last = at
			fig.add(b, w, lockers, hot, at, took, false)
			w.halt(b)
			closeLockers(lockers)
			s.RestartOld(b)
		}
		fig.report(b)
	})
}

const (
	// failoverRuns is the least number of failovers a figure is taken
	// over.
	failoverRuns = 5
	// clusterVoteGap exceeds twice the harness' cluster node timeout.
	clusterVoteGap = 2500 * time.Millisecond
	// sentinelVoteGap exceeds twice the harness' sentinel
	// failover-timeout (5s).
	sentinelVoteGap = 11 * time.Second
)

type failoverFigures struct{ grant, all, promoted []time.Duration }

func newFailoverFigures() *failoverFigures { return &failoverFigures{} }

// add takes the figures of one failover that started at at and took took
// as the harness saw it. With gap, the grant figure is the longest time
// without a grant around at instead of the time to the first grant after.
func (f *failoverFigures) add(b *testing.B, w *hotLoad, lockers []*hotLocker, hot string, at time.Time, took time.Duration, gap bool) {
	back := time.Now()
	last := w.waitProgress(b, lockers, back, hotProgressBound)
	if gap {
		f.grant = append(f.grant, w.maxGap(at.Add(-time.Second), back.Add(time.Second), hotKeys(hot)...))
	} else {
		g, ok := w.firstGrantAfter(at, hotKeys(hot)...)
		if !ok {
			b.Fatal("no grant after the failover")
		}
		f.grant = append(f.grant, time.Duration(g.fence-at.UnixMicro())*time.Microsecond)
	}
	f.all = append(f.all, last.Sub(at))
	f.promoted = append(f.promoted, took)
}

func (f *failoverFigures) report(b *testing.B) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, x := range []struct {
		name string
		d    []time.Duration
	}{{"grant", f.grant}, {"all", f.all}, {"promoted", f.promoted}} {
		b.ReportMetric(ms(percentile(x.d, 50)), x.name+"-p50-ms")
		b.ReportMetric(ms(percentile(x.d, 100)), x.name+"-max-ms")
	}
	b.ReportMetric(float64(len(f.grant)), "failovers")
	b.Logf("grant after failover: %v; all Lockers: %v; promoted: %v", f.grant, f.all, f.promoted)
}

// pubsubFloor returns a function that measures the floor of a pub/sub
// handoff: after a millisecond idle, a PUBLISH through pub reaches a
// subscriber on sub, which then makes one round trip.
func pubsubFloor(b *testing.B, pub redis.Cmdable, sub *redis.Client, sharded bool) func() time.Duration {
	ctx := context.Background()
	// In the key's slot, for a sharded channel.
	channel := "bench-handoff-true:{k}:floor-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	subscribe := sub.Subscribe
	if sharded {
		subscribe = sub.SSubscribe
	}
	ps := subscribe(ctx, channel)
	b.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan time.Time)
	go func() {
		defer close(done)
		for {
			if _, err := ps.ReceiveMessage(ctx); err != nil {
				return
			}
			_ = sub.Ping(ctx).Err()
			done <- time.Now()
		}
	}()
	return func() time.Duration {
		time.Sleep(time.Millisecond)
		start := time.Now()
		publish := pub.Publish
		if sharded {
			publish = pub.SPublish
		}
		if err := publish(ctx, channel, "").Err(); err != nil {
			b.Fatal(err)
		}
		return (<-done).Sub(start)
	}
}

// closeLockers closes the Mutexes of lockers; each is closed again, to no
// effect, at cleanup.
func closeLockers(lockers []*hotLocker) {
	for _, hl := range lockers {
		if m, ok := hl.l.(*mutex.Mutex); ok {
			_ = m.Close()
		}
	}
}
