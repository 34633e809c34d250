package mutex

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/redistest"
)

// On a Cluster of servers without sharded pub/sub (before Redis 7), the
// scripts announce releases with PUBLISH and the router subscribes through
// one plain connection. The servers here have sharded pub/sub, so the test
// puts the Mutexes in that mode by hand: their scripts PUBLISH, as they do
// where redis.REDIS_VERSION_NUM is missing, and their routers use the plain
// subscriber, as after an INFO that reports Redis 6.
func TestClusterWithoutShardedPubSub(t *testing.T) {
	cl := redistest.SharedCluster(t)
	ctx := t.Context()
	cfg := Config{Prefix: "t:" + t.Name(), TTL: 30 * time.Second}
	legacy := func() *Mutex {
		m, err := New(cl.Client(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		m.sharded = "0"
		m.mu.Lock()
		r := newShardRouter(m, cl.Client(t))
		r.legacy = 2
		m.sub = r
		m.mu.Unlock()
		return m
	}
	holder, waiter := legacy(), legacy()
	l, err := holder.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		l, err := waiter.Lock(wctx, "k")
		if err == nil {
			err = l.Unlock(ctx)
		}
		done <- err
	}()
	// Wait for the waiter's plain subscription, on any node.
	rkey := holder.redisKey("k")
	for deadline := time.Now().Add(10 * time.Second); ; {
		n := 0
		for _, s := range cl.Nodes() {
			subs, err := s.Client(t).PubSubNumSub(ctx, rkey).Result()
			if err != nil {
				t.Fatal(err)
			}
			n += int(subs[rkey])
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d plain subscribers of %q", n, rkey)
		}
		time.Sleep(5 * time.Millisecond)
	}
	primary := cl.PrimaryFor(t, rkey).Client(t)
	if err := primary.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	// Long before the holder's TTL: woken by the release.
	if err := <-done; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	stats, err := primary.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stats, "cmdstat_publish:") || strings.Contains(stats, "cmdstat_spublish:") {
		t.Fatalf("want PUBLISH and no SPUBLISH on the key's primary:\n%s", stats)
	}
}
