package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Topology tells a Watcher which servers take the writes of the lock keys:
// the one server of a standalone deployment, the primaries of a Cluster,
// the primary a Sentinel deployment names.
type Topology interface {
	// Primaries returns the addresses of the primaries, sorted, and the
	// layout: a description that changes whenever a primary changes or a
	// slot changes hands.
	Primaries(ctx context.Context) (addrs []string, layout string, err error)
	// Close closes the connections Primaries opened.
	Close() error
}

// nodeClients holds the runner's connections to the servers of a
// deployment, one per address, named RunnerClientName, without retries.
type nodeClients struct {
	mu      sync.Mutex
	clients map[string]*redis.Client
}

func (c *nodeClients) of(addr string) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clients == nil {
		c.clients = map[string]*redis.Client{}
	}
	cl := c.clients[addr]
	if cl == nil {
		cl = redis.NewClient(&redis.Options{Addr: addr, ClientName: RunnerClientName, MaxRetries: -1,
			ContextTimeoutEnabled: true, DialTimeout: 500 * time.Millisecond, PoolSize: 2})
		c.clients[addr] = cl
	}
	return cl
}

func (c *nodeClients) Close() error {
	c.mu.Lock()
	clients := c.clients
	c.clients = nil
	c.mu.Unlock()
	var errs []error
	for _, cl := range clients {
		errs = append(errs, cl.Close())
	}
	return errors.Join(errs...)
}

// StandaloneTopology is one server that is always the primary.
type StandaloneTopology string

// Primaries returns the server.
func (s StandaloneTopology) Primaries(context.Context) ([]string, string, error) {
	return []string{string(s)}, string(s), nil
}

// Close does nothing.
func (StandaloneTopology) Close() error { return nil }

// ClusterTopology asks the nodes of a Redis Cluster, the first that
// answers, which primaries serve the slots (CLUSTER SHARDS).
type ClusterTopology struct {
	nodes   []string
	clients nodeClients
}

// NewClusterTopology returns the topology of the cluster of nodes (every
// node's address, primaries and replicas).
func NewClusterTopology(nodes []string) *ClusterTopology {
	return &ClusterTopology{nodes: slices.Clone(nodes)}
}

// Primaries returns the primaries that serve slots, and the slot ranges
// with their primary as the layout.
func (c *ClusterTopology) Primaries(ctx context.Context) ([]string, string, error) {
	var errs []error
	for _, addr := range c.nodes {
		qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		shards, err := c.clients.of(addr).ClusterShards(qctx).Result()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("CLUSTER SHARDS on %s: %w", addr, err))
			continue
		}
		addrs, layout := clusterLayout(shards)
		return addrs, layout, nil
	}
	return nil, "", errors.Join(errs...)
}

// shardPrimary returns the address of the primary of a shard of a CLUSTER
// SHARDS reply, or "".
func shardPrimary(s redis.ClusterShard) string {
	for _, n := range s.Nodes {
		if n.Role == "master" {
			return net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
		}
	}
	return ""
}

// clusterLayout returns the primaries of a CLUSTER SHARDS reply that serve
// slots, sorted, and the slot ranges with their primary, one "first-last
// addr" per line.
func clusterLayout(shards []redis.ClusterShard) ([]string, string) {
	var addrs, lines []string
	for _, s := range shards {
		p := shardPrimary(s)
		if p == "" || len(s.Slots) == 0 {
			continue
		}
		if !slices.Contains(addrs, p) {
			addrs = append(addrs, p)
		}
		for _, r := range s.Slots {
			lines = append(lines, fmt.Sprintf("%05d-%05d %s", r.Start, r.End, p))
		}
	}
	slices.Sort(addrs)
	slices.Sort(lines)
	return addrs, strings.Join(lines, "\n")
}

// slotOwner returns the address of the primary serving slot in a CLUSTER
// SHARDS reply, or "".
func slotOwner(shards []redis.ClusterShard, slot int) string {
	for _, s := range shards {
		for _, r := range s.Slots {
			if r.Start <= int64(slot) && int64(slot) <= r.End {
				return shardPrimary(s)
			}
		}
	}
	return ""
}

// Close closes the connections to the nodes.
func (c *ClusterTopology) Close() error { return c.clients.Close() }

// SentinelTopology follows the primary that the sentinels of a Sentinel
// deployment name: a majority of them must name it (SENTINEL
// GET-MASTER-ADDR-BY-NAME), and it must report itself a primary (ROLE).
type SentinelTopology struct {
	sentinels []string
	master    string
	clients   nodeClients
}

// NewSentinelTopology returns the topology of the primary monitored under
// master by the sentinels.
func NewSentinelTopology(sentinels []string, master string) *SentinelTopology {
	return &SentinelTopology{sentinels: slices.Clone(sentinels), master: master}
}

// Primaries returns the primary; the layout is its address.
func (s *SentinelTopology) Primaries(ctx context.Context) ([]string, string, error) {
	votes := map[string]int{}
	var errs []error
	for _, addr := range s.sentinels {
		qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		r, err := s.clients.of(addr).Do(qctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.master).StringSlice()
		cancel()
		if err != nil || len(r) != 2 {
			errs = append(errs, fmt.Errorf("sentinel %s: %v %w", addr, r, err))
			continue
		}
		votes[r[0]+":"+r[1]]++
	}
	primary, err := majority(votes, len(s.sentinels))
	if err != nil {
		return nil, "", errors.Join(append(errs, err)...)
	}
	qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	role, err := s.clients.of(primary).Do(qctx, "ROLE").Slice()
	if err != nil {
		return nil, "", fmt.Errorf("ROLE on %s: %w", primary, err)
	}
	if len(role) == 0 || role[0] != "master" {
		return nil, "", fmt.Errorf("%s, named by the sentinels, has role %v", primary, role)
	}
	return []string{primary}, primary, nil
}

// majority returns the address that more than half of n voters named.
func majority(votes map[string]int, n int) (string, error) {
	for addr, v := range votes {
		if 2*v > n {
			return addr, nil
		}
	}
	return "", fmt.Errorf("no primary named by a majority of %d sentinels: %v", n, votes)
}

// Close closes the connections to the sentinels and primaries.
func (s *SentinelTopology) Close() error { return s.clients.Close() }
