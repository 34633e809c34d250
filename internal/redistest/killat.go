package redistest

import (
	"context"
	"testing"
	"time"
)

// KillPrimaryAt is KillPrimary that also returns the moment the primary
// was killed, for tests that time what clients see from the death on.
// With detect set, the replica is not told to take over: the cluster
// notices the death itself (after --cluster-node-timeout, one second) and
// the replica wins an election on its own, as in production; otherwise it
// takes over at once with CLUSTER FAILOVER FORCE, as with KillPrimary.
// took is the time from the kill to the cluster being usable with the
// promoted replica; the killed node is then restarted, and KillPrimaryAt
// waits until the cluster is whole and healthy again.
func (c *Cluster) KillPrimaryAt(t testing.TB, key string, detect bool) (killed time.Time, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clusterWait)
	defer cancel()
	slot := Slot(key)
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatal(err.Error())
	}
	primary, replica := c.shard(t, slot)
	killed = time.Now()
	primary.Kill(t)
	for {
		if !detect {
			if err := c.admin(replica).Do(ctx, "CLUSTER", "FAILOVER", "FORCE").Err(); err != nil {
				t.Fatalf("redistest: CLUSTER FAILOVER FORCE on %s: %v", replica.Addr(), err)
			}
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		err := c.waitOwner(attempt, slot, replica, false)
		cancelAttempt()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err.Error())
		}
	}
	took = time.Since(killed)
	primary.Restart(t)
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatal(err.Error())
	}
	return killed, took
}

// KillPrimaryAt is KillPrimary that also returns the moment the primary
// was killed.
func (s *Sentinel) KillPrimaryAt(t testing.TB) (killed time.Time, took time.Duration) {
	t.Helper()
	killed = time.Now()
	took = s.KillPrimary(t)
	return killed, took
}
