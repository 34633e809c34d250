package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// infoField returns the integer field name of section of the INFO or
// CLUSTER INFO reply info, or 0.
func infoField(info, name string) int64 {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// cmdCalls returns the calls of command in the INFO commandstats reply.
func cmdCalls(info, command string) int64 {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+command+":calls="); ok {
			n, _, _ := strings.Cut(v, ",")
			calls, _ := strconv.ParseInt(n, 10, 64)
			return calls
		}
	}
	return 0
}

// busStats sums, over every node of c, the pub/sub messages sent on the
// cluster bus: PUBLISH (broadcast to every node) and SPUBLISH (to the
// replicas of the shard).
func busStats(t *testing.T, c *redistest.Cluster) (publish, shard int64) {
	t.Helper()
	for _, n := range c.Nodes() {
		info := must[string](t)(admin(t, n).ClusterInfo(t.Context()).Result())
		publish += infoField(info, "cluster_stats_messages_publish_sent")
		shard += infoField(info, "cluster_stats_messages_publishshard_sent")
	}
	return publish, shard
}

func admin(t *testing.T, s *redistest.Server) *redis.Client {
	t.Helper()
	return s.Client(t)
}

// waitShardSubscribers waits until the node serving the slot of channel
// has n sharded subscribers of it.
func waitShardSubscribers(t *testing.T, node *redis.Client, channel string, n int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		got := must[map[string]int64](t)(node.PubSubShardNumSub(t.Context(), channel).Result())
		if got[channel] == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sharded subscribers of %q, want %d", got[channel], channel, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// On a Redis 7 Cluster, a release and the wake-up of its waiter run on the
// one shard that owns the key: SPUBLISH on its primary, copied to its
// replica only, and no PUBLISH anywhere.
func TestClusterReleaseStaysOnItsShard(t *testing.T) {
	cl := redistest.SharedCluster(t)
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			ctx := t.Context()
			p := prefix(t)
			// Long enough that only a wake-up, never the TTL, lets the
			// waiter in before its context ends.
			cfg := mutex.Config{Prefix: p, TTL: 30 * time.Second, FIFO: fifo}
			holder, _ := clusterMutex(t, cfg)
			waiter, _ := clusterMutex(t, cfg)
			key := "hot"
			rkey := p + ":{" + key + "}"
			owner := cl.PrimaryFor(t, rkey)
			node := admin(t, owner)
			l := must[mutex.Lease](t)(holder.Lock(ctx, key))
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			done := lockAsync(wctx, waiter, key)
			channel := rkey
			if fifo {
				// The waiter's wake channel: the lock key, ":w:", its
				// Mutex's id.
				for deadline := time.Now().Add(10 * time.Second); ; {
					chs := must[[]string](t)(node.PubSubShardChannels(ctx, rkey+":w:*").Result())
					if len(chs) == 1 {
						channel = chs[0]
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("wake channels %v", chs)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			waitShardSubscribers(t, node, channel, 1)
			if fifo {
				// Wait until the waiter is queued.
				for must[int64](t)(node.ZCard(ctx, rkey+":q").Result()) == 0 {
					time.Sleep(5 * time.Millisecond)
				}
			}
			for _, n := range cl.Nodes() {
				if err := admin(t, n).ConfigResetStat(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			pub0, shard0 := busStats(t, cl)
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			g := <-done
			if g.err != nil {
				t.Fatalf("waiter: %v", g.err)
			}
			pub1, shard1 := busStats(t, cl)
			for _, n := range cl.Nodes() {
				info := must[string](t)(admin(t, n).Info(ctx, "commandstats").Result())
				spub, pub := cmdCalls(info, "spublish"), cmdCalls(info, "publish")
				want := int64(0)
				if n == owner {
					want = 1
				}
				if spub != want || pub != 0 {
					t.Errorf("node %s: %d SPUBLISH (want %d) and %d PUBLISH (want 0)", n.Addr(), spub, want, pub)
				}
			}
			t.Logf("cluster bus messages for one release: %d PUBLISH, %d SPUBLISH", pub1-pub0, shard1-shard0)
			if pub1 != pub0 {
				t.Errorf("%d PUBLISH messages on the cluster bus", pub1-pub0)
			}
			if err := g.lease.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The cluster bus messages of one PUBLISH and one SPUBLISH, for the
// comparison in the documentation.
func TestClusterBusMessagesPerRelease(t *testing.T) {
	cl := redistest.SharedCluster(t)
	ctx := t.Context()
	channel := prefix(t) + ":{k}"
	node := admin(t, cl.PrimaryFor(t, channel))
	pub0, shard0 := busStats(t, cl)
	if err := node.Publish(ctx, channel, "").Err(); err != nil {
		t.Fatal(err)
	}
	pub1, shard1 := busStats(t, cl)
	if err := node.SPublish(ctx, channel, "").Err(); err != nil {
		t.Fatal(err)
	}
	pub2, shard2 := busStats(t, cl)
	t.Logf("PUBLISH: %d cluster bus messages; SPUBLISH: %d", pub1-pub0+shard1-shard0, pub2-pub1+shard2-shard1)
	if pub1-pub0 < int64(len(cl.Nodes())-1) {
		t.Errorf("PUBLISH sent %d bus messages, want one to each other node", pub1-pub0)
	}
	if shard2-shard1 > 1 || pub2 != pub1 {
		t.Errorf("SPUBLISH sent %d shard and %d broadcast bus messages, want at most one to the replica", shard2-shard1, pub2-pub1)
	}
}

// A waiter's sharded subscription follows its key: when the key's slot
// moves to another primary, when go-redis reconnects a connection whose
// channels span several slots, and when the shard fails over. Each time,
// the release wakes the waiter long before the holder's TTL.
func TestClusterWakeUpsFollowTheKey(t *testing.T) {
	cl := redistest.StartCluster(t)
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			ctx := t.Context()
			p := prefix(t)
			cfg := mutex.Config{Prefix: p, TTL: 30 * time.Second, FIFO: fifo}
			newM := func() *mutex.Mutex {
				m, err := mutex.New(cl.Client(t), cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				return m
			}
			holder, waiter := newM(), newM()
			// handoff has waiters for keys wait until fault has run, then
			// releases the keys and expects every waiter to get its key.
			handoff := func(t *testing.T, keys []string, fault func()) {
				t.Helper()
				leases := make([]mutex.Lease, len(keys))
				for i, k := range keys {
					leases[i] = must[mutex.Lease](t)(holder.Lock(ctx, k))
				}
				wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				defer cancel()
				dones := make([]<-chan grant, len(keys))
				for i, k := range keys {
					dones[i] = lockAsync(wctx, waiter, k)
				}
				for _, k := range keys {
					rkey := p + ":{" + k + "}"
					node := admin(t, cl.PrimaryFor(t, rkey))
					pattern := rkey
					if fifo {
						pattern = rkey + ":w:*"
					}
					for deadline := time.Now().Add(10 * time.Second); ; {
						chs := must[[]string](t)(node.PubSubShardChannels(ctx, pattern).Result())
						if len(chs) == 1 {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("no sharded subscription to %q", pattern)
						}
						time.Sleep(5 * time.Millisecond)
					}
				}
				fault()
				for _, l := range leases {
					uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					for {
						err := l.Unlock(uctx)
						// A primary killed may take the key with it.
						if err == nil || errors.Is(err, mutex.ErrNotHeld) {
							break
						}
						if uctx.Err() != nil {
							t.Fatalf("unlock: %v", err)
						}
						time.Sleep(50 * time.Millisecond)
					}
					cancel()
				}
				for i, done := range dones {
					g := <-done
					if g.err != nil {
						t.Fatalf("waiter for %q: %v", keys[i], g.err)
					}
					if err := g.lease.Unlock(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}

			t.Run("slot migration", func(t *testing.T) {
				rkey := p + ":{m}"
				from := cl.PrimaryFor(t, rkey)
				var to *redistest.Server
				for _, n := range cl.Primaries(t) {
					if n != from {
						to = n
						break
					}
				}
				handoff(t, []string{"m"}, func() { cl.MigrateSlot(t, redistest.Slot(rkey), to) })
			})
			t.Run("reconnect with several slots", func(t *testing.T) {
				// Two keys of different slots on one primary share its
				// sharded connection; go-redis subscribes again to both in
				// one request after a reconnect, which Redis refuses.
				var keys []string
				owner := cl.PrimaryFor(t, p+":{a0}")
				for i := 0; len(keys) < 2; i++ {
					k := fmt.Sprintf("a%d", i)
					if cl.PrimaryFor(t, p+":{"+k+"}") == owner {
						keys = append(keys, k)
					}
				}
				handoff(t, keys, func() {
					if err := admin(t, owner).ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
						t.Fatal(err)
					}
				})
			})
			t.Run("failover", func(t *testing.T) {
				handoff(t, []string{"f"}, func() { cl.Failover(t, p+":{f}") })
			})
			t.Run("primary killed", func(t *testing.T) {
				handoff(t, []string{"k"}, func() { cl.KillPrimary(t, p+":{k}") })
			})
		})
	}
}
