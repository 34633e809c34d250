package redistest_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
)

// shardKeys returns one key per primary of c, named after prefix.
func shardKeys(t *testing.T, c *redistest.Cluster, prefix string) []string {
	t.Helper()
	byPrimary := map[*redistest.Server]string{}
	for i := 0; len(byPrimary) < 3; i++ {
		if i > 1000 {
			t.Fatalf("found keys on %d primaries only", len(byPrimary))
		}
		k := prefix + strconv.Itoa(i)
		if p := c.PrimaryFor(t, k); byPrimary[p] == "" {
			byPrimary[p] = k
		}
	}
	keys := make([]string, 0, len(byPrimary))
	for _, k := range byPrimary {
		keys = append(keys, k)
	}
	return keys
}

func TestSharedCluster(t *testing.T) {
	c := redistest.SharedCluster(t)
	if c2 := redistest.SharedCluster(t); c2 != c {
		t.Fatal("SharedCluster returned two clusters")
	}
	ctx := t.Context()
	if n := len(c.Addrs()); n != 6 {
		t.Fatalf("%d addresses", n)
	}
	opt, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(opt.Addrs, " ") != strings.Join(c.Addrs(), " ") {
		t.Fatalf("ParseClusterURL(URL()).Addrs = %v, want %v", opt.Addrs, c.Addrs())
	}

	primaries := c.Primaries(t)
	if len(primaries) != 3 {
		t.Fatalf("%d primaries", len(primaries))
	}
	cc := c.Client(t)
	const n = 300
	for i := range n {
		k := "TestSharedCluster:" + strconv.Itoa(i)
		if err := cc.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	perPrimary := map[string]int{}
	direct := map[*redistest.Server]*redis.Client{}
	for i := range n {
		k := "TestSharedCluster:" + strconv.Itoa(i)
		if v, err := cc.Get(ctx, k).Int(); err != nil || v != i {
			t.Fatalf("GET %s = %d, %v", k, v, err)
		}
		p := c.PrimaryFor(t, k)
		perPrimary[p.Addr()]++
		if direct[p] == nil {
			direct[p] = p.Client(t)
		}
		// The primary holds the key itself, and its replica follows it.
		if v, err := direct[p].Get(ctx, k).Int(); err != nil || v != i {
			t.Fatalf("GET %s on its primary %s = %d, %v", k, p.Addr(), v, err)
		}
		if i%50 == 0 {
			r := c.ReplicaFor(t, k)
			info, err := r.Client(t).Info(ctx, "replication").Result()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_port:"+strconv.Itoa(p.Port())) {
				t.Fatalf("ReplicaFor(%s) = %s, not a replica of %s:\n%s", k, r.Addr(), p.Addr(), info)
			}
		}
	}
	if len(perPrimary) != 3 {
		t.Fatalf("keys spread over %d primaries: %v", len(perPrimary), perPrimary)
	}

	for _, k := range []string{"", "a", "TestSharedCluster:1", "{user1}.a", "x{user1}y", "{}a", "a{}b{c}", "{{a}}", "é{"} {
		want, err := cc.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := redistest.Slot(k); got != int(want) {
			t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
		}
	}
}

func TestClusterFailover(t *testing.T) {
	start := time.Now()
	c := redistest.StartCluster(t)
	t.Logf("cluster started in %v", time.Since(start))
	ctx := t.Context()
	cc := c.Client(t)
	keys := shardKeys(t, c, "TestClusterFailover:")
	write := func(val string) {
		t.Helper()
		for _, k := range keys {
			if err := cc.Set(ctx, k, val, 0).Err(); err != nil {
				t.Fatalf("SET %s: %v", k, err)
			}
		}
		// Every acknowledged write is on the replicas too.
		for _, p := range c.Primaries(t) {
			if n, err := p.Client(t).Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
				t.Fatalf("WAIT on %s = %d, %v", p.Addr(), n, err)
			}
		}
	}
	check := func(val string) {
		t.Helper()
		for _, k := range keys {
			if v, err := cc.Get(ctx, k).Result(); err != nil || v != val {
				t.Fatalf("GET %s = %q, %v, want %q", k, v, err, val)
			}
		}
	}
	write("1")

	p, r := c.PrimaryFor(t, keys[0]), c.ReplicaFor(t, keys[0])
	d := c.Failover(t, keys[0])
	t.Logf("graceful failover took %v", d)
	if got := c.PrimaryFor(t, keys[0]); got != r {
		t.Fatalf("after Failover the primary is %s, want the former replica %s", got.Addr(), r.Addr())
	}
	if got := c.ReplicaFor(t, keys[0]); got != p {
		t.Fatalf("after Failover the replica is %s, want the former primary %s", got.Addr(), p.Addr())
	}
	check("1")
	write("2")
	check("2")

	p, r = c.PrimaryFor(t, keys[1]), c.ReplicaFor(t, keys[1])
	d = c.KillPrimary(t, keys[1])
	t.Logf("forced failover after a kill took %v", d)
	if got := c.PrimaryFor(t, keys[1]); got != r {
		t.Fatalf("after KillPrimary the primary is %s, want the former replica %s", got.Addr(), r.Addr())
	}
	if got := c.ReplicaFor(t, keys[1]); got != p {
		t.Fatalf("after KillPrimary the replica is %s, want the restarted primary %s", got.Addr(), p.Addr())
	}
	check("2")
	write("3")
	check("3")
	if n := len(c.Primaries(t)); n != 3 {
		t.Fatalf("%d primaries", n)
	}

	// A node killed by the test itself is brought back by Heal.
	victim := c.ReplicaFor(t, keys[2])
	victim.Kill(t)
	c.Heal(t)
	if got := c.ReplicaFor(t, keys[2]); got != victim {
		t.Fatalf("after Heal the replica is %s, want %s", got.Addr(), victim.Addr())
	}
	check("3")
}

func TestClusterMigrateSlot(t *testing.T) {
	c := redistest.StartCluster(t)
	ctx := t.Context()
	const tag = "{TestClusterMigrateSlot}"
	slot := redistest.Slot(tag)
	from := c.PrimaryFor(t, tag)
	var to *redistest.Server
	for _, p := range c.Primaries(t) {
		if p != from {
			to = p
			break
		}
	}
	cc := c.Client(t)
	key := func(i int) string { return tag + ":" + strconv.Itoa(i) }
	const before = 1000 // keys written before the migration, moved in batches
	for i := range before {
		if err := cc.Set(ctx, key(i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// Traffic on the slot throughout the migration: new keys written, and
	// old and new ones read back.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written int
	var trafficErr error
	wg.Go(func() {
		i := before
		defer func() { written = i }()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := cc.Set(ctx, key(i), i, 0).Err(); err != nil {
				trafficErr = fmt.Errorf("SET %s: %w", key(i), err)
				return
			}
			i++
			j := n * 7 % i
			if v, err := cc.Get(ctx, key(j)).Int(); err != nil || v != j {
				trafficErr = fmt.Errorf("GET %s = %d, %w", key(j), v, err)
				return
			}
		}
	})
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	c.MigrateSlot(t, slot, to)
	t.Logf("slot migration took %v", time.Since(start))
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	if trafficErr != nil {
		t.Fatal(trafficErr)
	}
	t.Logf("%d keys written during the migration", written-before)
	if got := c.PrimaryFor(t, tag); got != to {
		t.Fatalf("slot %d served by %s, want %s", slot, got.Addr(), to.Addr())
	}
	if n, err := to.Client(t).ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != int64(written) {
		t.Fatalf("%s holds %d keys of slot %d, %v; want %d", to.Addr(), n, slot, err, written)
	}
	if n, err := from.Client(t).ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != 0 {
		t.Fatalf("%s still holds %d keys of slot %d, %v", from.Addr(), n, slot, err)
	}
	for i := range written {
		if v, err := cc.Get(ctx, key(i)).Int(); err != nil || v != i {
			t.Fatalf("GET %s = %d, %v", key(i), v, err)
		}
	}

	// Moving it to where it is does nothing; moving it back works.
	c.MigrateSlot(t, slot, to)
	c.MigrateSlot(t, slot, from)
	if got := c.PrimaryFor(t, tag); got != from {
		t.Fatalf("slot %d served by %s after moving it back, want %s", slot, got.Addr(), from.Addr())
	}
	if v, err := cc.Get(ctx, key(0)).Int(); err != nil || v != 0 {
		t.Fatalf("GET %s = %d, %v", key(0), v, err)
	}
}

// clusterFailure runs StartCluster and returns the message it failed with.
func clusterFailure(t *testing.T, opts ...redistest.Option) string {
	t.Helper()
	f := &fatalTB{TB: t}
	done := make(chan *redistest.Cluster)
	go func() {
		var c *redistest.Cluster
		defer func() { done <- c }()
		c = redistest.StartCluster(f, opts...)
	}()
	if c := <-done; c != nil {
		t.Fatalf("StartCluster succeeded with %v", c.Addrs())
	}
	if f.skipped {
		t.Fatal("StartCluster skipped the test instead of failing it")
	}
	return f.msg
}

func TestClusterCLIMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-redis-cli")
	t.Setenv("REDIS_CLI", missing)
	_, err := redistest.CLIBinary()
	if err == nil || !errors.Is(err, redistest.ErrNotFound) {
		t.Fatalf("CLIBinary() error = %v, want one matching ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "sudo apt-get install -y redis-tools") || !strings.Contains(err.Error(), missing) {
		t.Errorf("error does not name the install command and the file: %v", err)
	}
	if msg := clusterFailure(t); msg != err.Error() {
		t.Errorf("StartCluster failed with %q, want %q", msg, err.Error())
	}

	t.Setenv("REDIS_CLI", "")
	t.Setenv("PATH", t.TempDir())
	if _, err := redistest.CLIBinary(); err == nil || !strings.Contains(err.Error(), "redis-cli not found in PATH") {
		t.Fatalf("CLIBinary() error = %v", err)
	}
	// Without redis-server either, that is what is reported.
	if msg := clusterFailure(t); !strings.Contains(msg, install) {
		t.Errorf("StartCluster without redis-server failed with %q", msg)
	}
}

func TestClusterWithPort(t *testing.T) {
	if msg := clusterFailure(t, redistest.WithPort(7000)); !strings.Contains(msg, "WithPort") {
		t.Fatalf("StartCluster with WithPort failed with %q", msg)
	}
}
