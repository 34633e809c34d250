package chaos

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Deployments a scenario runs on (Scenario.Deployment).
const (
	// DeployStandalone is one redis-server (RedisServer).
	DeployStandalone = ""
	// DeployCluster is a Redis Cluster of three primaries with one
	// replica each (redistest.StartCluster); the clients use a
	// redis.ClusterClient.
	DeployCluster = "cluster"
	// DeploySentinel is a primary, its replica and three sentinels
	// (redistest.StartSentinel); the clients use a failover client.
	DeploySentinel = "sentinel"
)

// Faults of the replicated deployments. The key watcher's view has a gap
// around each (Watcher.BeginChange).
const (
	// FaultClusterFailover: CLUSTER FAILOVER on the replica of the hot
	// key's shard (graceful: the replica catches up with its primary,
	// which holds writes meanwhile, then the two swap roles).
	FaultClusterFailover = "cluster-failover"
	// FaultClusterKillPrimary: the hot key's shard stops replicating (its
	// replica is SIGSTOPped and its replication link closed with CLIENT
	// KILL TYPE replica) for most of a TTL and until the next accepted
	// write of the hot key (see cutTimes); then its primary is SIGKILLed,
	// the replica resumed and promoted with CLUSTER FAILOVER FORCE, and
	// the killed node restarted, empty, as its replica. The grants the
	// replica did not receive are lost (documented unsafe without
	// Config.Replicas); each lock value lost is recorded (OpFailoverLost).
	FaultClusterKillPrimary = "cluster-kill-primary"
	// FaultSlotMigration: the hot key's slot moves, with its keys, to
	// another primary (SETSLOT IMPORTING and MIGRATING, MIGRATE, SETSLOT
	// NODE) while the clients use it, following ASK and MOVED redirections.
	FaultSlotMigration = "slot-migration"
	// FaultSentinelFailover: replication stops and the primary is killed
	// as in FaultClusterKillPrimary; the sentinels find it down and
	// promote the replica; the killed server restarts, empty, as the new
	// primary's replica.
	FaultSentinelFailover = "sentinel-failover"
)

// DeploymentFor returns the deployment fault runs on.
func DeploymentFor(fault string) string {
	switch fault {
	case FaultClusterFailover, FaultClusterKillPrimary, FaultSlotMigration:
		return DeployCluster
	case FaultSentinelFailover:
		return DeploySentinel
	}
	return DeployStandalone
}

// hotRedisKey is the Redis key of the lock on HotKey.
const hotRedisKey = "chaos:{" + HotKey + "}"

// clusterVoteWait is how long the nemesis waits between two failovers of
// the shards of one primary: a Cluster's primaries refuse to vote for a
// replica of a primary they voted about within twice the node timeout (1s
// in redistest), and the failover would not happen.
const clusterVoteWait = 2500 * time.Millisecond

// deployment is a running Cluster or Sentinel deployment and the runner's
// connections to its servers.
type deployment struct {
	h        *harness
	cluster  *redistest.Cluster
	sentinel *redistest.Sentinel
	nodes    nodeClients
}

// startDeployment starts the deployment kind in dir; Close stops it.
func startDeployment(ctx context.Context, dir, kind string) (*deployment, error) {
	d := &deployment{h: newHarness(ctx, dir)}
	var err error
	switch kind {
	case DeployCluster:
		err = d.h.run(func() { d.cluster = redistest.StartCluster(d.h) })
	case DeploySentinel:
		err = d.h.run(func() { d.sentinel = redistest.StartSentinel(d.h) })
		if err == nil {
			err = d.slowSentinels(ctx)
		}
	default:
		err = fmt.Errorf("unknown deployment %q", kind)
	}
	if err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// sentinelDownAfter is the down-after-milliseconds of the sentinels.
// With redistest's 1000, under the load of a scenario the sentinels
// often find the replica they just promoted down about a second later and
// fail over again, back to the server the nemesis restarted.
const sentinelDownAfter = "2000"

// slowSentinels sets the sentinels' down-after-milliseconds to
// sentinelDownAfter.
func (d *deployment) slowSentinels(ctx context.Context) error {
	for _, addr := range d.sentinel.SentinelAddrs() {
		actx, cancel := adminContext(ctx)
		err := d.nodes.of(addr).Do(actx, "SENTINEL", "SET", d.sentinel.MasterName(), "down-after-milliseconds", sentinelDownAfter).Err()
		cancel()
		if err != nil {
			return fmt.Errorf("SENTINEL SET down-after-milliseconds on %s: %w", addr, err)
		}
	}
	return nil
}

// ClientURL is the redisurl URL the clients open.
func (d *deployment) ClientURL() string {
	if d.cluster != nil {
		return "redis+cluster://" + strings.Join(d.cluster.Addrs(), ",")
	}
	return "redis+sentinel://" + strings.Join(d.sentinel.SentinelAddrs(), ",") + "/" + d.sentinel.MasterName()
}

// Topology returns a new Topology of the deployment, for a Watcher.
func (d *deployment) Topology() Topology {
	if d.cluster != nil {
		return NewClusterTopology(d.cluster.Addrs())
	}
	return NewSentinelTopology(d.sentinel.SentinelAddrs(), d.sentinel.MasterName())
}

// Close stops every server and closes the runner's connections.
func (d *deployment) Close() error {
	return errors.Join(d.nodes.Close(), d.h.Close())
}

// lockValues returns the lock keys under chaos:* on the server behind c,
// with their values.
func lockValues(ctx context.Context, c redis.Cmdable) (map[string]string, error) {
	vals := map[string]string{}
	iter := c.Scan(ctx, 0, "chaos:*", 1000).Iterator()
	for iter.Next(ctx) {
		rkey := iter.Val()
		if _, ok := lockKeyName(rkey); !ok {
			continue
		}
		v, err := c.Get(ctx, rkey).Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, err
		default:
			vals[rkey] = v
		}
	}
	return vals, iter.Err()
}

// lostValues compares the lock values a primary held with those its
// replica holds, and returns the keys whose value the replica does not
// have, sorted.
func lostValues(primary, replica map[string]string) []string {
	var lost []string
	for rkey, v := range primary {
		if replica[rkey] != v {
			lost = append(lost, rkey)
		}
	}
	sort.Strings(lost)
	return lost
}

// hotShard returns the primary and the replica of the hot key's shard, and
// whether the other primaries will vote for a failover of it now (see
// waitVotes).
func (n *nemesis) hotShard(ctx context.Context) (primary, replica *redistest.Server, ready bool, err error) {
	c := n.deploy.cluster
	if err := n.deploy.h.run(func() {
		primary, replica = c.PrimaryFor(n.deploy.h, hotRedisKey), c.ReplicaFor(n.deploy.h, hotRedisKey)
	}); err != nil {
		return nil, nil, false, err
	}
	return primary, replica, n.waitVotes(ctx, primary.Addr()), nil
}

// clusterFailover runs a graceful CLUSTER FAILOVER of the hot key's shard.
func (n *nemesis) clusterFailover(ctx context.Context) (bool, error) {
	c := n.deploy.cluster
	primary, replica, ready, err := n.hotShard(ctx)
	if !ready {
		return false, err
	}
	what := fmt.Sprintf("CLUSTER FAILOVER: replica %s takes slot %d from primary %s", replica.Addr(), redistest.Slot(hotRedisKey), primary.Addr())
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: what})
	n.beginChange(what)
	var took time.Duration
	err = n.deploy.h.run(func() { took = c.Failover(n.deploy.h, hotRedisKey) })
	n.endChange()
	n.voted[primary.Addr()] = time.Now()
	if err != nil {
		return false, err
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: fmt.Sprintf("%s is the primary after %v", replica.Addr(), took.Round(time.Millisecond))})
	return true, nil
}

// clusterKillPrimary kills the hot key's primary after its replication
// stopped, and promotes the replica with CLUSTER FAILOVER FORCE.
func (n *nemesis) clusterKillPrimary(ctx context.Context) (bool, error) {
	c := n.deploy.cluster
	primary, replica, ready, err := n.hotShard(ctx)
	if !ready {
		return false, err
	}
	slot := redistest.Slot(hotRedisKey)
	what := fmt.Sprintf("replication of slot %d stops (SIGSTOP replica %s, CLIENT KILL TYPE replica on %s), then SIGKILL primary %s and CLUSTER FAILOVER FORCE",
		slot, replica.Addr(), primary.Addr(), primary.Addr())
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: what})
	n.beginChange(what)
	defer n.endChange()
	killed, lost, err := n.cutAndKill(ctx, primary, replica, true)
	if err != nil || !killed {
		return false, err
	}
	took, err := n.forceFailover(ctx, replica, primary.Addr(), slot)
	n.voted[primary.Addr()] = time.Now()
	if err != nil {
		return false, err
	}
	if err := n.deploy.h.run(func() { c.Heal(n.deploy.h) }); err != nil {
		return false, err
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: fmt.Sprintf("%s is the primary %v after the kill, %d lock values lost; %s restarted as its replica",
		replica.Addr(), took.Round(time.Millisecond), lost, primary.Addr())})
	return true, nil
}

// slotMigration moves the hot key's slot to another primary.
func (n *nemesis) slotMigration(ctx context.Context) (bool, error) {
	c := n.deploy.cluster
	var from *redistest.Server
	var primaries []*redistest.Server
	if err := n.deploy.h.run(func() {
		from, primaries = c.PrimaryFor(n.deploy.h, hotRedisKey), c.Primaries(n.deploy.h)
	}); err != nil {
		return false, err
	}
	var others []*redistest.Server
	for _, p := range primaries {
		if p.Addr() != from.Addr() {
			others = append(others, p)
		}
	}
	if len(others) == 0 {
		return false, errors.New("no other primary to move the slot to")
	}
	to := others[n.rng.IntN(len(others))]
	slot := redistest.Slot(hotRedisKey)
	what := fmt.Sprintf("MIGRATE slot %d from %s to %s", slot, from.Addr(), to.Addr())
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: what})
	n.beginChange(what)
	start := time.Now()
	err := n.deploy.h.run(func() { c.MigrateSlot(n.deploy.h, slot, to) })
	n.endChange()
	if err != nil {
		return false, err
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: fmt.Sprintf("slot %d served by %s after %v", slot, to.Addr(), time.Since(start).Round(time.Millisecond))})
	return true, nil
}

// sentinelFailover kills the primary after its replication stopped, and
// waits until the sentinels promoted the replica.
func (n *nemesis) sentinelFailover(ctx context.Context) (bool, error) {
	s := n.deploy.sentinel
	primary, replica := s.Primary(), s.Replica()
	topo := NewSentinelTopology(s.SentinelAddrs(), s.MasterName())
	addrs, _, err := topo.Primaries(ctx)
	_ = topo.Close()
	switch {
	case ctx.Err() != nil:
		return false, nil
	case err != nil:
		return false, err
	case addrs[0] != primary.Addr():
		return false, fmt.Errorf("the sentinels name %s as the primary, not %s: they failed over on their own", addrs[0], primary.Addr())
	}
	what := fmt.Sprintf("replication stops (SIGSTOP replica %s, CLIENT KILL TYPE replica on %s), then SIGKILL primary %s",
		replica.Addr(), primary.Addr(), primary.Addr())
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: what})
	n.beginChange(what)
	killed, lost, err := n.cutAndKill(ctx, primary, replica, false)
	if err != nil || !killed {
		n.endChange()
		return false, err
	}
	var took time.Duration
	err = n.deploy.h.run(func() { took = s.KillPrimary(n.deploy.h) })
	n.endChange()
	if err != nil {
		return false, err
	}
	if err := n.deploy.h.run(func() { s.RestartOld(n.deploy.h) }); err != nil {
		return false, err
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: fmt.Sprintf("sentinels promoted %s %v after the kill, %d lock values lost; %s restarted as its replica",
		replica.Addr(), took.Round(time.Millisecond), lost, primary.Addr())})
	return true, nil
}

// cutAndKill stops the replication from primary to replica (SIGSTOP of the
// replica, then CLIENT KILL TYPE replica on the primary, so that nothing
// written afterwards reaches it), waits up to TTL/2 and for the next
// accepted write of the hot key (a holder granted meanwhile), reads the
// primary's lock values, SIGKILLs it and resumes the replica. Once the
// replica has read all the primary had sent, it compares their lock values
// and records each one the replica lacks as OpFailoverLost. It reports
// false, with the replica resumed and the primary running, if ctx ended
// before the kill.
func (n *nemesis) cutAndKill(ctx context.Context, primary, replica *redistest.Server, cluster bool) (killed bool, lost int, err error) {
	h := n.deploy.h
	if err := h.run(func() { replica.Pause(h) }); err != nil {
		return false, 0, err
	}
	paused := true
	defer func() {
		if paused {
			err = errors.Join(err, h.run(func() { replica.Resume(h) }))
		}
	}()
	actx, cancel := adminContext(ctx)
	defer cancel()
	pc := n.deploy.nodes.of(primary.Addr())
	if err := pc.Do(actx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		return false, 0, fmt.Errorf("CLIENT KILL TYPE replica on %s: %w", primary.Addr(), err)
	}
	// Replication stays stopped for most of a TTL, so that the replica's
	// copy of the hot key has expired when it is promoted, then until the
	// next write of a holder granted meanwhile. The replica stays stopped
	// well within the 1s after which the cluster or the sentinels would
	// find it down.
	lag, wait := cutTimes(n.ttl)
	sleep(ctx, lag*7/10+time.Duration(n.rng.Int64N(int64(lag*3/10)+1)))
	wctx, wcancel := context.WithTimeout(ctx, wait)
	n.store.NextWriter(wctx, HotKey)
	wcancel()
	if ctx.Err() != nil {
		n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: "the scenario ended before the kill; replication resumes"})
		return false, 0, nil
	}
	before, err := lockValues(actx, pc)
	if err != nil {
		return false, 0, fmt.Errorf("lock values of %s: %w", primary.Addr(), err)
	}
	if err := h.run(func() { primary.Kill(h) }); err != nil {
		return false, 0, err
	}
	paused = false
	if err := h.run(func() { replica.Resume(h) }); err != nil {
		return true, 0, err
	}
	after, t, err := n.replicaValues(actx, replica, cluster)
	if err != nil {
		return true, 0, err
	}
	for _, rkey := range lostValues(before, after) {
		k, _ := lockKeyName(rkey)
		tok, fence := parseLockValue(before[rkey])
		n.rec.Record(Event{Op: OpFailoverLost, Type: TypeOK, T: t, Keys: []string{k}, Token: tok, Fence: fence,
			Note: fmt.Sprintf("%s held %q on %s; its replica %s holds %q", rkey, before[rkey], primary.Addr(), replica.Addr(), after[rkey])})
		lost++
	}
	return true, lost, nil
}

// cutTimes returns how long cutAndKill keeps replication stopped before it
// waits for a write (at most lag), and how long it waits for the write:
// a TTL and half of one, at most 600ms and 250ms.
func cutTimes(ttl time.Duration) (lag, wait time.Duration) {
	return min(ttl, 600*time.Millisecond), min(ttl/2, 250*time.Millisecond)
}

// replicaValues waits until the replica has found its link to the killed
// primary down (so it has applied everything the primary sent), then reads
// its lock values. It returns them with the time the read ended.
func (n *nemesis) replicaValues(ctx context.Context, replica *redistest.Server, cluster bool) (map[string]string, int64, error) {
	rc := n.deploy.nodes.of(replica.Addr())
	for {
		info, err := rc.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:down") {
			break
		}
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("replica %s never found its primary down: %v", replica.Addr(), err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn := rc.Conn()
	defer conn.Close()
	if cluster {
		// A Cluster replica answers reads of its primary's slots only on a
		// READONLY connection.
		if err := conn.ReadOnly(ctx).Err(); err != nil {
			return nil, 0, err
		}
	}
	vals, err := lockValues(ctx, conn)
	return vals, time.Now().UnixNano(), err
}

// forceFailover promotes replica, whose primary (at dead) is down, with
// CLUSTER FAILOVER FORCE, again if an election fails, until every other
// node names it as the primary of slot. It returns the time that took.
func (n *nemesis) forceFailover(ctx context.Context, replica *redistest.Server, dead string, slot int) (time.Duration, error) {
	start := time.Now()
	rc := n.deploy.nodes.of(replica.Addr())
	for attempt := 0; attempt < 6; attempt++ {
		actx, cancel := adminContext(ctx)
		err := rc.Do(actx, "CLUSTER", "FAILOVER", "FORCE").Err()
		cancel()
		if err != nil {
			return 0, fmt.Errorf("CLUSTER FAILOVER FORCE on %s: %w", replica.Addr(), err)
		}
		for until := time.Now().Add(5 * time.Second); time.Now().Before(until); time.Sleep(10 * time.Millisecond) {
			if n.serves(ctx, replica.Addr(), dead, slot) {
				return time.Since(start), nil
			}
		}
	}
	return 0, fmt.Errorf("%s did not take over slot %d", replica.Addr(), slot)
}

// serves reports whether every node but the one at dead names addr as the
// primary of slot.
func (n *nemesis) serves(ctx context.Context, addr, dead string, slot int) bool {
	for _, s := range n.deploy.cluster.Nodes() {
		if s.Addr() == dead {
			continue
		}
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		shards, err := n.deploy.nodes.of(s.Addr()).ClusterShards(qctx).Result()
		cancel()
		if err != nil || slotOwner(shards, slot) != addr {
			return false
		}
	}
	return true
}

// waitVotes waits until a failover of the shard of primary can be voted
// for (clusterVoteWait after the last failover that primary took part in
// as a primary). It reports false if ctx ended first.
func (n *nemesis) waitVotes(ctx context.Context, primary string) bool {
	if last, ok := n.voted[primary]; ok {
		sleep(ctx, time.Until(last.Add(clusterVoteWait)))
	}
	return ctx.Err() == nil
}

func (n *nemesis) beginChange(what string) {
	if n.watcher != nil {
		n.watcher.BeginChange(what)
	}
}

func (n *nemesis) endChange() {
	if n.watcher != nil {
		n.watcher.EndChange()
	}
}
