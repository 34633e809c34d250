package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Faults a scenario can inject. Unless noted, the nemesis acts every 3×TTL.
const (
	FaultNone = "none"
	// FaultPauseHolder: SIGSTOP a holder of the hot key right after its
	// write, for 2.5×TTL, then SIGCONT.
	FaultPauseHolder = "pause-holder"
	// FaultStallHolder is no nemesis action: the clients sleep 1.5×TTL
	// between the check and the write in one critical section in five
	// (ClientConfig.PauseHolders), so fencing must reject the late write.
	FaultStallHolder = "stall-holder"
	// FaultKillClient: SIGKILL a random client and start a new one.
	FaultKillClient = "kill-client"
	// FaultKillHolder: SIGKILL the writer of the next accepted write of the
	// hot key (a holder) and start a new client.
	FaultKillHolder = "kill-holder"
	// FaultKillWaiter: SIGKILL a random client other than the last
	// accepted writer of the hot key (most likely waiting in Lock) and
	// start a new client.
	FaultKillWaiter = "kill-waiter"
	// FaultPauseRedis: SIGSTOP redis-server for 2.5×TTL, then SIGCONT.
	FaultPauseRedis = "pause-redis"
	// FaultRedisRestart: right after an accepted write of the hot key,
	// SIGKILL redis-server and start it again on the same port a 20th to a
	// quarter of the TTL later, without persistence: Redis forgets the
	// locks (documented unsafe). Holders keep their leases up to TTL/2
	// after writing (ClientConfig.LongHold).
	FaultRedisRestart = "redis-restart"
	// FaultRedisRestartAOF: the same with appendonly yes and appendfsync
	// always, so Redis reloads every write it acknowledged.
	FaultRedisRestartAOF = "redis-restart-aof"
	// FaultProxyLatency: the clients connect through a Proxy; every 3×TTL,
	// for 2×TTL, every chunk in both directions is delayed by a random
	// 0–TTL/5, in order per connection.
	FaultProxyLatency = "proxy-latency"
	// FaultProxyReset: the clients connect through a Proxy, which closes
	// every connection (both ends) at once.
	FaultProxyReset = "proxy-reset"
	// FaultProxyDrop: the clients connect through a Proxy; on one or more
	// of the connections in use, the next request reaches Redis but its
	// reply (and all after it) is swallowed for a TTL, then the connection
	// is closed: go-redis sees a lost reply and sends the request again.
	FaultProxyDrop = "proxy-drop"
	// FaultScriptFlush: SCRIPT FLUSH.
	FaultScriptFlush = "script-flush"
	// FaultClientPauseWrite: CLIENT PAUSE 2.5×TTL WRITE.
	FaultClientPauseWrite = "client-pause-write"
	// FaultClientKill: CLIENT KILL every connection that is not subscribed
	// to anything, except the runner's own (RunnerClientName).
	FaultClientKill = "client-kill"
	// FaultClientKillPubSub: CLIENT KILL every subscribed connection (the
	// waiters' release channels), except the runner's own.
	FaultClientKillPubSub = "client-kill-pubsub"
	// FaultEvict: redis-server runs with maxmemory 4mb and allkeys-lru,
	// and a filler keeps writing junk keys, so Redis evicts keys, lock keys
	// among them (documented unsafe). The faults counted are the lock keys
	// evicted.
	FaultEvict = "evict"
)

// Faults returns every fault name.
func Faults() []string {
	return []string{FaultNone, FaultPauseHolder, FaultStallHolder, FaultKillClient, FaultKillHolder,
		FaultKillWaiter, FaultPauseRedis, FaultRedisRestart, FaultRedisRestartAOF, FaultProxyLatency,
		FaultProxyReset, FaultProxyDrop, FaultScriptFlush, FaultClientPauseWrite, FaultClientKill,
		FaultClientKillPubSub, FaultEvict, FaultClusterFailover, FaultClusterKillPrimary, FaultSlotMigration,
		FaultSentinelFailover}
}

// RedisConfigFor returns the redis-server configuration that fault needs.
func RedisConfigFor(fault string) RedisConfig {
	switch fault {
	case FaultRedisRestartAOF:
		return RedisConfig{AOF: true}
	case FaultEvict:
		return RedisConfig{MaxMemory: "4mb", Policy: "allkeys-lru"}
	}
	return RedisConfig{}
}

// KillsPrimary reports whether fault kills a primary whose replica lacks
// the latest grants: unsafe without Config.Replicas.
func KillsPrimary(fault string) bool {
	return fault == FaultClusterKillPrimary || fault == FaultSentinelFailover
}

// LongHold reports whether the clients of fault hold each lease up to
// TTL/2 after writing (ClientConfig.LongHold): the faults that make Redis
// lose data (or, with AOF, must not), where that widens the window in
// which Redis can grant the keys again while a holder still uses them.
func LongHold(fault string) bool {
	return fault == FaultRedisRestart || fault == FaultRedisRestartAOF || KillsPrimary(fault)
}

// UsesProxy reports whether the clients of a scenario with fault connect
// to Redis through a Proxy.
func UsesProxy(fault string) bool {
	switch fault {
	case FaultProxyLatency, FaultProxyReset, FaultProxyDrop:
		return true
	}
	return false
}

// nemesis injects one kind of fault until its context ends, and leaves
// every process running (resumed, restarted, unpaused) when it returns.
type nemesis struct {
	fault   string
	ttl     time.Duration
	rec     *Recorder
	clients *clients
	redis   *RedisServer
	proxy   *Proxy // nil unless UsesProxy(fault)
	store   *Store
	rng     *rand.Rand
	admin   *redis.Client // the runner's connection to Redis, named RunnerClientName
	// deploy is the Cluster or Sentinel deployment of the faults that
	// need one (DeploymentFor), instead of redis.
	deploy *deployment
	// watcher, if not nil, is told of the changes of layout.
	watcher *Watcher
	// voted holds, per Cluster primary, when it last lost its shard to a
	// failover (see clusterVoteWait).
	voted map[string]time.Time
	// failures counts the injections that failed.
	failures int
}

func (n *nemesis) run(ctx context.Context) (faults int) {
	switch n.fault {
	case FaultNone, FaultStallHolder:
		<-ctx.Done()
		return 0
	}
	if n.redis != nil {
		n.admin = n.redis.RunnerClient()
		defer n.admin.Close()
	}
	n.voted = map[string]time.Time{}
	if n.fault == FaultEvict {
		return n.evict(ctx)
	}
	if n.proxy != nil {
		defer n.proxy.Disarm()
		defer n.proxy.SetLatency(0)
	}
	period := 3 * n.ttl
	for {
		select {
		case <-ctx.Done():
			return faults
		case <-time.After(period):
		}
		did, err := n.inject(ctx)
		if err != nil {
			n.failures++
			if n.deploy != nil {
				// A failover or migration that failed leaves the
				// deployment in a state the next one cannot start from.
				n.rec.Record(Event{Op: OpFault, Type: TypeFail, Err: err.Error(), Note: "no more faults in this scenario"})
				<-ctx.Done()
				return faults
			}
			n.rec.Record(Event{Op: OpFault, Type: TypeFail, Err: err.Error()})
			continue
		}
		if did {
			faults++
		}
	}
}

// inject injects the fault once. It reports false when there was nothing
// to act on (no holder found, no connection to kill).
func (n *nemesis) inject(ctx context.Context) (bool, error) {
	pause := 2*n.ttl + n.ttl/2
	switch n.fault {
	case FaultPauseHolder:
		p := n.clients.byPID(n.store.NextWriter(ctx, HotKey))
		if p == nil {
			return false, nil
		}
		return true, n.stop(p.cmd.Process, "client", pause)
	case FaultKillClient:
		return n.kill(n.clients.random(n.rng), "client")
	case FaultKillHolder:
		return n.kill(n.clients.byPID(n.store.NextWriter(ctx, HotKey)), "holder")
	case FaultKillWaiter:
		return n.kill(n.waiter(), "waiter")
	case FaultPauseRedis:
		return true, n.stop(n.redis.Process(), "redis", pause)
	case FaultRedisRestart, FaultRedisRestartAOF:
		return n.restart(ctx)
	case FaultProxyLatency, FaultProxyReset, FaultProxyDrop:
		if n.proxy == nil {
			return false, errors.New("no proxy between the clients and Redis")
		}
		return n.proxyFault(ctx)
	case FaultScriptFlush:
		actx, cancel := adminContext(ctx)
		defer cancel()
		n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: "SCRIPT FLUSH"})
		if err := n.admin.ScriptFlush(actx).Err(); err != nil {
			return false, err
		}
		n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: "SCRIPT FLUSH done"})
		return true, nil
	case FaultClientPauseWrite:
		return true, n.clientPause(ctx, pause)
	case FaultClientKill:
		return n.killConns(ctx, false)
	case FaultClientKillPubSub:
		return n.killConns(ctx, true)
	}
	switch d := DeploymentFor(n.fault); {
	case d == DeployStandalone:
		return false, fmt.Errorf("unknown fault %q", n.fault)
	case n.deploy == nil || (d == DeployCluster) != (n.deploy.cluster != nil):
		return false, fmt.Errorf("fault %q needs a %s deployment", n.fault, d)
	}
	switch n.fault {
	case FaultClusterFailover:
		return n.clusterFailover(ctx)
	case FaultClusterKillPrimary:
		return n.clusterKillPrimary(ctx)
	case FaultSlotMigration:
		return n.slotMigration(ctx)
	case FaultSentinelFailover:
		return n.sentinelFailover(ctx)
	}
	return false, fmt.Errorf("unknown fault %q", n.fault)
}

// adminContext bounds a runner command; it outlives ctx, so the nemesis
// can undo a fault after the scenario ended.
func adminContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

func waitDone(done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("process did not exit after SIGKILL")
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// stop pauses p with SIGSTOP for d, then resumes it, whatever happens.
func (n *nemesis) stop(p *os.Process, what string, d time.Duration) error {
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: "SIGSTOP " + what + " pid " + strconv.Itoa(p.Pid)})
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	time.Sleep(d)
	err := p.Signal(syscall.SIGCONT)
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: "SIGCONT " + what + " pid " + strconv.Itoa(p.Pid)})
	return err
}

// kill SIGKILLs the client p (nil: nothing to do) and starts a new one.
func (n *nemesis) kill(p *proc, what string) (bool, error) {
	if p == nil {
		return false, nil
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: "SIGKILL " + what + " pid " + strconv.Itoa(p.cmd.Process.Pid)})
	err := errors.Join(p.cmd.Process.Kill(), waitDone(p.done), n.clients.start())
	if err != nil {
		return false, err
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: what + " replaced"})
	return true, nil
}

// waiter returns a random live client other than the last accepted
// writer of the hot key, or nil.
func (n *nemesis) waiter() *proc {
	holder := n.store.LastWriter(HotKey)
	c := n.clients
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]int, 0, len(c.procs))
	for id, p := range c.procs {
		if p.cmd.Process.Pid != holder {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	return c.procs[ids[n.rng.IntN(len(ids))]]
}

// restart kills redis-server and starts it again, recording how many keys
// it held before and after.
func (n *nemesis) restart(ctx context.Context) (bool, error) {
	dbsize := func() string {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		v, err := n.admin.DBSize(actx).Result()
		if err != nil {
			return "?"
		}
		return strconv.FormatInt(v, 10)
	}
	// Right after a holder's write, while it still holds the hot key, and
	// down for a 20th to a quarter of the TTL: the holder's lease outlives
	// the outage, so a server that forgot it can grant it again while it
	// is still valid.
	n.store.NextWriter(ctx, HotKey)
	if ctx.Err() != nil {
		return false, nil
	}
	down := n.ttl/20 + time.Duration(n.rng.Int64N(int64(n.ttl/5)+1))
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: fmt.Sprintf("SIGKILL redis pid %d (aof %t, %s keys), down for %v",
		n.redis.Process().Pid, n.redis.Config.AOF, dbsize(), down.Round(time.Millisecond))})
	if err := n.redis.Restart(down); err != nil {
		return false, err
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: fmt.Sprintf("redis restarted, pid %d, %s keys after reconnect",
		n.redis.Process().Pid, dbsize())})
	return true, nil
}

func (n *nemesis) proxyFault(ctx context.Context) (bool, error) {
	switch n.fault {
	case FaultProxyLatency:
		n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: fmt.Sprintf("proxy latency 0-%v per chunk for %v", n.ttl/5, 2*n.ttl)})
		n.proxy.SetLatency(n.ttl / 5)
		sleep(ctx, 2*n.ttl)
		n.proxy.SetLatency(0)
		n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: "proxy latency off"})
		return true, nil
	case FaultProxyReset:
		n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: "proxy reset"})
		k := n.proxy.Reset()
		n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: fmt.Sprintf("proxy closed %d connections", k)})
		return k > 0, nil
	default:
		before := n.proxy.Dropped()
		k := n.proxy.DropReplies(n.rng, n.ttl)
		if k == 0 {
			return false, nil
		}
		n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: fmt.Sprintf("proxy drops the next reply on %d connections", k)})
		sleep(ctx, n.ttl+n.ttl/2)
		d := n.proxy.Dropped() - before
		n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: fmt.Sprintf("proxy swallowed replies on %d of %d connections", d, k)})
		return d > 0, nil
	}
}

// clientPause pauses Redis' writes for d, and unpauses it early if the
// scenario ends first.
func (n *nemesis) clientPause(ctx context.Context, d time.Duration) error {
	actx, cancel := adminContext(ctx)
	defer cancel()
	ms := strconv.FormatInt(d.Milliseconds(), 10)
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: "CLIENT PAUSE " + ms + " WRITE"})
	if err := n.admin.Do(actx, "CLIENT", "PAUSE", ms, "WRITE").Err(); err != nil {
		return err
	}
	sleep(ctx, d)
	uctx, ucancel := adminContext(ctx)
	defer ucancel()
	if err := n.admin.Do(uctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		return err
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: "CLIENT UNPAUSE"})
	return nil
}

// killConns kills, by id, the connections of CLIENT LIST that are
// subscribed to something (pubsub) or not (!pubsub), sparing those named
// RunnerClientName. It reports false when there was none.
func (n *nemesis) killConns(ctx context.Context, pubsub bool) (bool, error) {
	actx, cancel := adminContext(ctx)
	defer cancel()
	list, err := n.admin.ClientList(actx).Result()
	if err != nil {
		return false, err
	}
	ids := killable(list, pubsub)
	if len(ids) == 0 {
		return false, nil
	}
	kind := "normal"
	if pubsub {
		kind = "pubsub"
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: fmt.Sprintf("CLIENT KILL ID of %d %s connections", len(ids), kind)})
	cmds, err := n.admin.Pipelined(actx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.ClientKillByFilter(actx, "ID", id)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	var killed int64
	for _, c := range cmds {
		killed += c.(*redis.IntCmd).Val()
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: fmt.Sprintf("CLIENT KILL killed %d %s connections", killed, kind)})
	return killed > 0, nil
}

// killable parses CLIENT LIST and returns the ids of the connections not
// named RunnerClientName that are subscribed to a channel or pattern
// (pubsub) or to none (!pubsub). Subscriptions are told by the sub, psub
// and ssub counts, which do not depend on the protocol (a RESP3 connection
// may subscribe and still run commands).
func killable(list string, pubsub bool) []string {
	var ids []string
	for line := range strings.Lines(list) {
		f := map[string]string{}
		for kv := range strings.FieldsSeq(line) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				f[k] = v
			}
		}
		if f["id"] == "" || f["name"] == RunnerClientName {
			continue
		}
		subscribed := strings.Contains(f["flags"], "P")
		for _, k := range []string{"sub", "psub", "ssub"} {
			if v, _ := strconv.Atoi(f[k]); v > 0 {
				subscribed = true
			}
		}
		if subscribed == pubsub {
			ids = append(ids, f["id"])
		}
	}
	return ids
}

// Eviction filler: values of 1–4 KiB under keys outside the clients'
// prefix, written in pipelines of fillBatch.
const (
	fillPrefix = "filler:"
	fillBatch  = 32
)

// evict writes junk keys until ctx ends, so that a server with a small
// maxmemory and allkeys-lru evicts keys, and counts, through keyspace
// notifications, the evicted keys of the clients' prefix ("chaos:"), each
// recorded as one fault.
func (n *nemesis) evict(ctx context.Context) (faults int) {
	actx, cancel := adminContext(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		evicted int
		wg      sync.WaitGroup
	)
	ps, err := n.watchEvictions(actx)
	if err != nil {
		n.rec.Record(Event{Op: OpFault, Type: TypeFail, Err: "watch evictions: " + err.Error()})
	} else {
		wg.Go(func() {
			for m := range ps.Channel() {
				_, key, _ := strings.Cut(m.Channel, "__:")
				n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: "evicted " + key})
				mu.Lock()
				evicted++
				mu.Unlock()
			}
		})
	}
	n.rec.Record(Event{Op: OpFault, Type: TypeInvoke, Note: fmt.Sprintf("filler: %s<n> keys of 1-4 KiB, maxmemory %s, %s",
		fillPrefix, n.redis.Config.MaxMemory, n.redis.Config.Policy)})
	written, ferr := n.fill(ctx)
	ictx, icancel := adminContext(ctx)
	defer icancel()
	// Delete the filler keys, so that the clients' last cycles run without
	// eviction.
	left, cerr := n.unfill(ictx)
	ferr = errors.Join(ferr, cerr)
	if ps != nil {
		_ = ps.Close()
		wg.Wait()
	}
	total, err := Info(ictx, n.admin, "stats", "evicted_keys")
	if err != nil {
		total = "? (" + err.Error() + ")"
	}
	mu.Lock()
	defer mu.Unlock()
	note := fmt.Sprintf("filler wrote %d keys (deleted the %d left); evicted_keys %s, of which lock keys %d", written, left, total, evicted)
	if ferr != nil {
		n.rec.Record(Event{Op: OpFault, Type: TypeFail, Note: note, Err: ferr.Error()})
	} else {
		n.rec.Record(Event{Op: OpFault, Type: TypeOK, Note: note})
	}
	return evicted
}

// watchEvictions turns on keyspace notifications of evictions (keeping
// any other classes already on) and subscribes to those of lock keys.
func (n *nemesis) watchEvictions(ctx context.Context) (*redis.PubSub, error) {
	cur, err := n.admin.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		return nil, err
	}
	flags := cur["notify-keyspace-events"]
	for _, f := range "Ke" {
		if !strings.ContainsRune(flags, f) && !(f == 'e' && strings.ContainsRune(flags, 'A')) {
			flags += string(f)
		}
	}
	if err := n.admin.ConfigSet(ctx, "notify-keyspace-events", flags).Err(); err != nil {
		return nil, err
	}
	ps := n.admin.PSubscribe(ctx, "__keyspace@*__:chaos:*")
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, err
	}
	return ps, nil
}

// fill writes filler keys until ctx ends and returns how many it wrote.
// OOM errors (Redis could not free enough) are expected and ignored.
func (n *nemesis) fill(ctx context.Context) (int, error) {
	val := make([]byte, 4096)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	written, failures := 0, 0
	for ctx.Err() == nil {
		_, err := n.admin.Pipelined(ctx, func(p redis.Pipeliner) error {
			for range fillBatch {
				p.Set(ctx, fillPrefix+strconv.Itoa(written), val[:1024+n.rng.IntN(3*1024+1)], 0)
				written++
			}
			return nil
		})
		if err != nil && ctx.Err() == nil && !strings.HasPrefix(err.Error(), "OOM") {
			if failures++; failures > 100 {
				return written, err
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Millisecond)
	}
	return written, nil
}

// unfill deletes the filler keys left and returns how many it deleted.
func (n *nemesis) unfill(ctx context.Context) (int, error) {
	deleted := 0
	iter := n.admin.Scan(ctx, 0, fillPrefix+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		k, err := n.admin.Unlink(ctx, batch...).Result()
		deleted += int(k)
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 500 {
			if err := flush(); err != nil {
				return deleted, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return deleted, err
	}
	return deleted, flush()
}
