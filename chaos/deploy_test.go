package chaos

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The harness turns Fatal into an error of run, keeps the errors Errorf
// records for run to return, runs the cleanups last first at Close, and
// bounds the context of each call.
func TestHarness(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t.Context(), dir)
	var order []int
	err := h.run(func() {
		h.Helper()
		h.Cleanup(func() { order = append(order, 1) })
		h.Cleanup(func() { order = append(order, 2) })
		h.Errorf("first %d", 1)
		if d, ok := h.Context().Deadline(); !ok || time.Until(d) > harnessCallTimeout {
			t.Errorf("call context deadline %v, %t", d, ok)
		}
		if d := h.TempDir(); filepath.Dir(d) != dir {
			t.Errorf("TempDir %s not under %s", d, dir)
		}
		h.Fatalf("second %s", "x")
		t.Error("Fatalf returned")
	})
	if err == nil || !strings.Contains(err.Error(), "first 1") || !strings.Contains(err.Error(), "second x") || !h.Failed() {
		t.Fatalf("run: %v, failed %t", err, h.Failed())
	}
	if err := h.run(func() {}); err != nil {
		t.Fatalf("a clean call: %v", err)
	}
	h.Cleanup(func() { h.Fatal("cleanup failed") })
	if err := h.Close(); err == nil || !strings.Contains(err.Error(), "cleanup failed") {
		t.Fatalf("Close: %v", err)
	}
	if !slices.Equal(order, []int{2, 1}) {
		t.Fatalf("cleanups ran in order %v, want [2 1]", order)
	}
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("a panic other than Fatal: recovered %v", r)
		}
	}()
	_ = h.run(func() { panic("boom") })
}

func TestClusterLayout(t *testing.T) {
	shard := func(ip string, port int64, slots ...int64) redis.ClusterShard {
		s := redis.ClusterShard{Nodes: []redis.Node{
			{IP: "127.0.0.9", Port: port + 1, Role: "replica"},
			{IP: ip, Port: port, Role: "master"},
		}}
		for i := 0; i < len(slots); i += 2 {
			s.Slots = append(s.Slots, redis.SlotRange{Start: slots[i], End: slots[i+1]})
		}
		return s
	}
	shards := []redis.ClusterShard{
		shard("127.0.0.3", 3, 10923, 16383),
		shard("127.0.0.1", 1, 0, 5460, 6001, 10922),
		shard("127.0.0.2", 2, 5461, 6000),
		shard("127.0.0.4", 4), // no slots
	}
	addrs, layout := clusterLayout(shards)
	if !slices.Equal(addrs, []string{"127.0.0.1:1", "127.0.0.2:2", "127.0.0.3:3"}) {
		t.Fatalf("primaries %v", addrs)
	}
	want := "00000-05460 127.0.0.1:1\n05461-06000 127.0.0.2:2\n06001-10922 127.0.0.1:1\n10923-16383 127.0.0.3:3"
	if layout != want {
		t.Fatalf("layout\n%s\nwant\n%s", layout, want)
	}
	slices.Reverse(shards)
	if _, again := clusterLayout(shards); again != layout {
		t.Fatalf("the layout depends on the order of the reply:\n%s", again)
	}
	if slotOwner(shards, 6000) != "127.0.0.2:2" || slotOwner(shards, 6001) != "127.0.0.1:1" || slotOwner(nil, 1) != "" {
		t.Fatal("slotOwner")
	}
}

func TestMajority(t *testing.T) {
	if a, err := majority(map[string]int{"a": 2, "b": 1}, 3); err != nil || a != "a" {
		t.Fatalf("2 of 3: %q, %v", a, err)
	}
	if _, err := majority(map[string]int{"a": 1, "b": 1}, 3); err == nil {
		t.Fatal("no majority of 3 found one")
	}
	if _, err := majority(map[string]int{"a": 1}, 2); err == nil {
		t.Fatal("1 of 2 is no majority")
	}
}

func TestLostValues(t *testing.T) {
	primary := map[string]string{"chaos:{hot}": "b:2", "chaos:{cold0}": "c:3", "chaos:{cold1}": "d:4"}
	replica := map[string]string{"chaos:{hot}": "a:1", "chaos:{cold1}": "d:4", "chaos:{cold2}": "e:5"}
	if got := lostValues(primary, replica); !slices.Equal(got, []string{"chaos:{cold0}", "chaos:{hot}"}) {
		t.Fatalf("lost %v", got)
	}
}

// The replica stays stopped within the 1s after which the cluster or the
// sentinels would find it down, for most of a TTL when the TTL is short.
func TestCutTimes(t *testing.T) {
	for _, ttl := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 10 * time.Second} {
		lag, wait := cutTimes(ttl)
		if lag+wait >= time.Second || lag > ttl || wait > ttl/2 {
			t.Errorf("TTL %v: lag %v, wait %v", ttl, lag, wait)
		}
	}
	if lag, _ := cutTimes(500 * time.Millisecond); lag*7/10 < 300*time.Millisecond {
		t.Errorf("TTL 500ms: lag %v, the replica's copy may not have expired at the promotion", lag)
	}
}

func TestPickKeys(t *testing.T) {
	for _, multi := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(1, 2))
		pairs := 0
		for range 1000 {
			keys := pickKeys(rng, multi)
			if len(keys) == 2 {
				pairs++
				if keys[0] != HotKey {
					t.Fatalf("pair %v", keys)
				}
			}
		}
		if multi != (pairs > 100) || (!multi && pairs > 0) {
			t.Fatalf("multiKey %t: %d pairs in 1000 Locks", multi, pairs)
		}
	}
}

func TestOpenRedis(t *testing.T) {
	for _, tc := range []struct {
		url       string
		noRetries bool
		check     func(redis.UniversalClient) bool
	}{
		{"redis://127.0.0.1:1/0", false, func(c redis.UniversalClient) bool {
			o := c.(*redis.Client).Options()
			return o.Addr == "127.0.0.1:1" && o.MaxRetries == 3 && o.ContextTimeoutEnabled
		}},
		{"redis://127.0.0.1:1/0", true, func(c redis.UniversalClient) bool {
			return c.(*redis.Client).Options().MaxRetries == 0
		}},
		{"redis+cluster://127.0.0.1:1,127.0.0.1:2", true, func(c redis.UniversalClient) bool {
			o := c.(*redis.ClusterClient).Options()
			return slices.Equal(o.Addrs, []string{"127.0.0.1:1", "127.0.0.1:2"}) && o.ContextTimeoutEnabled
		}},
		{"redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster", false, func(c redis.UniversalClient) bool {
			_, ok := c.(*redis.Client)
			return ok
		}},
	} {
		c, err := openRedis(tc.url, tc.noRetries)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if !tc.check(c) {
			t.Errorf("%s (no retries %t): %T %+v", tc.url, tc.noRetries, c, c)
		}
		_ = c.Close()
	}
}

// The replicated deployments run every fault in both modes, without and
// with Config.Replicas; killing a primary is unsafe only without.
func TestDeploymentScenarios(t *testing.T) {
	byName := map[string]Scenario{}
	for _, s := range Scenarios() {
		byName[s.Name] = s
	}
	for _, fault := range []string{FaultClusterFailover, FaultClusterKillPrimary, FaultSlotMigration, FaultSentinelFailover} {
		for _, mode := range []string{"plain", "fifo"} {
			for _, suffix := range []string{"", "+replicas"} {
				name := fault + "/" + mode + suffix
				s, ok := byName[name]
				if !ok {
					t.Fatalf("no scenario %s", name)
				}
				want := ExpectSafe
				if suffix == "" && KillsPrimary(fault) {
					want = ExpectUnsafe
				}
				if s.Expect != want || s.Deployment != DeploymentFor(fault) || s.Deployment == DeployStandalone ||
					(s.Replicas == 1) != (suffix != "") || s.FIFO != (mode == "fifo") {
					t.Errorf("%s: %+v", name, s)
				}
			}
		}
	}
	if !slices.Contains(Faults(), FaultSentinelFailover) || DeploymentFor(FaultNone) != DeployStandalone {
		t.Fatal("Faults or DeploymentFor")
	}
	// A lease lost at a failover breaks a safe row, and is only measured
	// in an unsafe one.
	for _, expect := range []string{ExpectSafe, ExpectUnsafe} {
		r := Row{Scenario: Scenario{Expect: expect}, Result: Result{Granted: 1, LostLeases: 1}}
		r.judge()
		if r.Pass != (expect == ExpectUnsafe) {
			t.Errorf("%s row with a lost lease: pass %t (%s)", expect, r.Pass, r.Reason)
		}
	}
}

func TestReportFailoverColumns(t *testing.T) {
	var b strings.Builder
	rows := []Row{{Scenario: Scenario{Name: "x/plain", Expect: ExpectUnsafe}, Faults: 2, FaultErrors: 1,
		Result: Result{Overlaps: 3, HardOverlaps: 1, LostLeases: 2, Granted: 1}, Pass: true}}
	if err := WriteMarkdown(&b, rows); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| x/plain | unsafe | 2 (1 failed) |") || !strings.Contains(b.String(), "| 3/1, 2 lost at failover |") {
		t.Fatalf("table:\n%s", b.String())
	}
}

// lockValues reads the lock keys only.
func TestLockValues(t *testing.T) {
	srv := testRedis(t, RedisConfig{})
	c := srv.RunnerClient()
	defer c.Close()
	ctx := context.Background()
	for k, v := range map[string]string{"chaos:{hot}": "a:1", "chaos:{cold0}": "b:2", "chaos:{hot}:q": "x", "other": "y"} {
		if err := c.Set(ctx, k, v, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	vals, err := lockValues(ctx, c)
	if err != nil || len(vals) != 2 || vals["chaos:{hot}"] != "a:1" || vals["chaos:{cold0}"] != "b:2" {
		t.Fatalf("lockValues: %v, %v", vals, err)
	}
	gone := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer gone.Close()
	if _, err := lockValues(ctx, gone); err == nil {
		t.Fatal("no error from a server that is not there")
	}
}
