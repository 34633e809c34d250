package redistest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// BackendsEnv names the environment variable that selects the backends
// Backends returns: a comma-separated list of their names, such as
// "standalone,cluster". Unset or empty means all of them.
const BackendsEnv = "DISTLOCK_BACKENDS"

// Backend is a kind of Redis deployment that tests run against, shared by
// the tests of a package: the server of Shared, the cluster of
// SharedCluster or the Sentinel deployment of SharedSentinel. Tests using
// it must use their own keys and must not stop, kill or fail over its
// servers. The deployment is started on first use, by Client or URL.
type Backend struct {
	// Name is "standalone", "cluster" or "sentinel".
	Name string

	// client opens a client of the deployment with opt, whose addresses
	// it sets first, then applies mods.
	client func(t testing.TB, opt *redis.UniversalOptions, mods []func(*redis.UniversalOptions)) redis.UniversalClient
	url    func(t testing.TB) string
}

// backends are every Backend, in the order Backends returns them.
var backends = []Backend{
	{
		Name: "standalone",
		client: func(t testing.TB, opt *redis.UniversalOptions, mods []func(*redis.UniversalOptions)) redis.UniversalClient {
			return Shared(t).Backend().client(t, opt, mods)
		},
		url: func(t testing.TB) string { return Shared(t).URL() },
	},
	{
		Name: "cluster",
		client: func(t testing.TB, opt *redis.UniversalOptions, mods []func(*redis.UniversalOptions)) redis.UniversalClient {
			opt.Addrs = SharedCluster(t).Addrs()
			apply(opt, mods)
			return redis.NewClusterClient(opt.Cluster())
		},
		url: func(t testing.TB) string {
			return "redis+cluster://" + strings.Join(SharedCluster(t).Addrs(), ",")
		},
	},
	{
		Name: "sentinel",
		client: func(t testing.TB, opt *redis.UniversalOptions, mods []func(*redis.UniversalOptions)) redis.UniversalClient {
			s := SharedSentinel(t)
			opt.Addrs, opt.MasterName = s.SentinelAddrs(), s.MasterName()
			apply(opt, mods)
			return redis.NewFailoverClient(opt.Failover())
		},
		url: func(t testing.TB) string {
			s := SharedSentinel(t)
			return "redis+sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/" + s.MasterName()
		},
	},
}

// Backend returns a standalone Backend whose clients connect to s, for a
// test or benchmark that needs one on a server of its own.
func (s *Server) Backend() Backend {
	return Backend{
		Name: "standalone",
		client: func(_ testing.TB, opt *redis.UniversalOptions, mods []func(*redis.UniversalOptions)) redis.UniversalClient {
			opt.Addrs = []string{s.Addr()}
			apply(opt, mods)
			return redis.NewClient(opt.Simple())
		},
		url: func(testing.TB) string { return s.URL() },
	}
}

func apply(opt *redis.UniversalOptions, mods []func(*redis.UniversalOptions)) {
	for _, mod := range mods {
		mod(opt)
	}
}

// Client returns a new go-redis client of the deployment, closed when the
// test completes: a *redis.Client for the standalone server, a
// *redis.ClusterClient seeded with every node of the cluster, and a
// failover *redis.Client (redis.NewFailoverClient) that finds the primary
// through the sentinels. Apart from the addresses (and the master name) it
// uses go-redis defaults, changed by mods in order; the options that do not
// apply to the kind of client are ignored.
func (b Backend) Client(t testing.TB, mods ...func(*redis.UniversalOptions)) redis.UniversalClient {
	t.Helper()
	c := b.client(t, &redis.UniversalOptions{}, mods)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// URL returns a URL naming the deployment in the forms of package
// redisurl: redis://HOST:PORT/0, redis+cluster://HOST:PORT,... with every
// node, or redis+sentinel://HOST:PORT,.../MASTER with every sentinel.
func (b Backend) URL(t testing.TB) string {
	t.Helper()
	return b.url(t)
}

// Backends returns the backends that tests run against: standalone,
// cluster and sentinel, in that order, or those named in $DISTLOCK_BACKENDS
// (see BackendsEnv). An unknown name there fails the test.
func Backends(t testing.TB) []Backend {
	t.Helper()
	env := strings.TrimSpace(os.Getenv(BackendsEnv))
	if env == "" {
		return slices.Clone(backends)
	}
	want := make(map[string]bool)
	for name := range strings.SplitSeq(env, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		if !slices.ContainsFunc(backends, func(b Backend) bool { return b.Name == name }) {
			t.Fatalf("redistest: unknown backend %q in %s=%q; the backends are %s",
				name, BackendsEnv, env, strings.Join(backendNames(), ", "))
		}
		want[name] = true
	}
	var bs []Backend
	for _, b := range backends {
		if want[b.Name] {
			bs = append(bs, b)
		}
	}
	if len(bs) == 0 {
		t.Fatalf("redistest: no backend named in %s=%q", BackendsEnv, env)
	}
	return bs
}

func backendNames() []string {
	names := make([]string, len(backends))
	for i, b := range backends {
		names[i] = b.Name
	}
	return names
}

// RunBackends runs f as a subtest of t for each backend of Backends, named
// after the backend.
func RunBackends(t *testing.T, f func(t *testing.T, b Backend)) {
	t.Helper()
	for _, b := range Backends(t) {
		t.Run(b.Name, func(t *testing.T) { f(t, b) })
	}
}

// Keys returns the keys that match pattern (KEYS), sorted: those of every
// primary for a cluster client, of every shard for a ring, and of the
// server for other clients.
func Keys(ctx context.Context, c redis.UniversalClient, pattern string) ([]string, error) {
	var (
		mu   sync.Mutex
		keys []string
	)
	collect := func(ctx context.Context, c redis.UniversalClient) error {
		k, err := c.Keys(ctx, pattern).Result()
		if err != nil {
			return fmt.Errorf("redistest: KEYS %s: %w", pattern, err)
		}
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, k...)
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
	slices.Sort(keys)
	return keys, nil
}
