package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// CommandStats returns the number of calls of each command since the last
// ResetStats (or server start), from INFO commandstats, keyed by lower-case
// command name ("set", "evalsha", "publish"; subcommands as
// "config|resetstat"). Commands run by scripts are counted by Redis as
// well. For a cluster client the counts of all primaries are added up; for
// a ring, those of all shards.
func CommandStats(ctx context.Context, c redis.UniversalClient) (map[string]int64, error) {
	stats := make(map[string]int64)
	var mu sync.Mutex
	collect := func(ctx context.Context, c redis.UniversalClient) error {
		info, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			return fmt.Errorf("redistest: INFO commandstats: %w", err)
		}
		m, err := parseCommandStats(info)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for k, v := range m {
			stats[k] += v
		}
		return nil
	}
	var err error
	switch cc := c.(type) {
	case *redis.ClusterClient:
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return collect(ctx, n) })
	case *redis.Ring:
		err = cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return collect(ctx, n) })
	default:
		err = collect(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	return stats, nil
}

// parseCommandStats parses INFO commandstats output, lines like
// "cmdstat_set:calls=3,usec=12,usec_per_call=4.00,rejected_calls=0,failed_calls=0".
func parseCommandStats(info string) (map[string]int64, error) {
	stats := make(map[string]int64)
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, fmt.Errorf("redistest: bad commandstats line %q", line)
		}
		found := false
		for _, f := range strings.Split(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("redistest: bad commandstats line %q: %w", line, err)
				}
				stats[strings.ToLower(name)] += n
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("redistest: no calls in commandstats line %q", line)
		}
	}
	return stats, nil
}

// ResetStats resets the server statistics (CONFIG RESETSTAT), on every node
// for a cluster or ring client.
func ResetStats(ctx context.Context, c redis.UniversalClient) error {
	reset := func(ctx context.Context, c redis.UniversalClient) error {
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			return fmt.Errorf("redistest: CONFIG RESETSTAT: %w", err)
		}
		return nil
	}
	switch cc := c.(type) {
	case *redis.ClusterClient:
		return cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return reset(ctx, n) })
	case *redis.Ring:
		return cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return reset(ctx, n) })
	default:
		return reset(ctx, c)
	}
}

// CPU returns the CPU time the server of c has used (INFO cpu:
// used_cpu_user plus used_cpu_sys).
func CPU(ctx context.Context, c redis.UniversalClient) (time.Duration, error) {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("redistest: INFO cpu: %w", err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "used_cpu_user" && name != "used_cpu_sys") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, fmt.Errorf("redistest: INFO cpu line %q: %w", line, err)
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}
