package mutex

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ErrUnsafeServer is wrapped by the errors of Verify that name a server
// setting under which locks are not safe, or a server too old to run the
// Mutex's scripts.
var ErrUnsafeServer = errors.New("mutex: unsafe server")

// minVersion is the oldest Redis the scripts run on (ZMSCORE came in 6.2).
var minVersion = [2]int{6, 2}

// Verify asks each server behind the Mutex's client (every primary of a
// Cluster) for its version and memory settings, and reports what makes
// locks unsafe there, in an error wrapping ErrUnsafeServer:
//
//   - a maxmemory limit with a maxmemory-policy other than noeviction:
//     lock keys carry a TTL, so both the allkeys-* and the volatile-*
//     policies may evict a lock that is held;
//   - a server older than Redis 6.2.
//
// On a Cluster it also reports, in an error that does not wrap
// ErrUnsafeServer, a cluster that is not fully set up: no primary serving
// a slot, or a primary that does not report cluster_state ok with all
// 16384 slots assigned.
//
// New makes no Redis call, so Verify is the place to check a deployment,
// once at start-up. It uses INFO, which managed services allow where they
// rename CONFIG. An error that does not wrap ErrUnsafeServer means Verify
// could not ask (Redis unreachable, INFO refused). It does not judge
// persistence: whether a restart may forget locks is a choice of the
// deployment (see Safety conditions).
func (m *Mutex) Verify(ctx context.Context) error {
	if cc, ok := m.client.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		var errs []error
		primaries := 0
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			addr := node.Options().Addr
			err := errors.Join(verifyServer(ctx, node, addr), verifyCluster(ctx, node, addr))
			mu.Lock()
			defer mu.Unlock()
			primaries++
			if err != nil {
				errs = append(errs, err)
			}
			return nil
		})
		switch {
		case err != nil:
			err = fmt.Errorf("verify: %w", err)
		case primaries == 0:
			err = errors.New("verify: no primary serves a hash slot: the cluster is not set up")
		}
		return errors.Join(append(errs, err)...)
	}
	addr := "server"
	if c, ok := m.client.(*redis.Client); ok {
		addr = c.Options().Addr
	}
	return verifyServer(ctx, m.client, addr)
}

// verifyCluster reports a Cluster that does not serve every hash slot:
// the keys of the slots it does not serve cannot be locked.
func verifyCluster(ctx context.Context, c *redis.Client, addr string) error {
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("verify: %s: %w", addr, err)
	}
	state, assigned := "", -1
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "cluster_state:"); ok {
			state = v
		}
		if v, ok := strings.CutPrefix(line, "cluster_slots_assigned:"); ok {
			assigned, _ = strconv.Atoi(v)
		}
	}
	if state != "ok" || assigned != clusterSlots {
		return fmt.Errorf("verify: %s: cluster_state %s, %d of %d hash slots assigned: the cluster is not fully set up", addr, state, assigned, clusterSlots)
	}
	return nil
}

func verifyServer(ctx context.Context, c redis.Cmdable, addr string) error {
	info, err := c.Info(ctx, "server", "memory").Result()
	if err != nil {
		return fmt.Errorf("verify %s: %w", addr, err)
	}
	return checkServerInfo(addr, info)
}

// checkServerInfo judges the reply of INFO server memory of the server at
// addr.
func checkServerInfo(addr, info string) error {
	fields := make(map[string]string)
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	var errs []error
	version := fields["redis_version"]
	if !atLeast(version, minVersion) {
		errs = append(errs, fmt.Errorf("%w: %s: redis_version %q, need %d.%d or later",
			ErrUnsafeServer, addr, version, minVersion[0], minVersion[1]))
	}
	policy := fields["maxmemory_policy"]
	maxmemory, _ := strconv.ParseInt(fields["maxmemory"], 10, 64)
	if maxmemory > 0 && policy != "noeviction" {
		errs = append(errs, fmt.Errorf("%w: %s: maxmemory-policy %s with maxmemory %d can evict held locks; use noeviction",
			ErrUnsafeServer, addr, policy, maxmemory))
	}
	return errors.Join(errs...)
}

// atLeast reports whether the dotted version v is min or later.
func atLeast(v string, min [2]int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return major > min[0] || major == min[0] && minor >= min[1]
}
