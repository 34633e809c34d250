package redistest_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
)

func TestSentinel(t *testing.T) {
	start := time.Now()
	s := redistest.StartSentinel(t)
	t.Logf("sentinel deployment started in %v", time.Since(start))
	ctx := t.Context()
	if n := len(s.SentinelAddrs()); n != 3 {
		t.Fatalf("%d sentinels", n)
	}
	for _, sn := range s.Sentinels() {
		addr, err := sn.Client(t).Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName()).StringSlice()
		if err != nil || strings.Join(addr, ":") != s.Primary().Addr() {
			t.Fatalf("sentinel %s names %v, %v as the primary, want %s", sn.Addr(), addr, err, s.Primary().Addr())
		}
	}
	assertReplica := func(replica, primary *redistest.Server) {
		t.Helper()
		info, err := replica.Client(t).Info(ctx, "replication").Result()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_port:"+strconv.Itoa(primary.Port())) ||
			!strings.Contains(info, "master_link_status:up") {
			t.Fatalf("%s is not a replica of %s:\n%s", replica.Addr(), primary.Addr(), info)
		}
	}
	assertReplica(s.Replica(), s.Primary())

	c := s.FailoverClient(t, func(o *redis.FailoverOptions) { o.ClientName = "TestSentinel" })
	if name, err := c.ClientGetName(ctx).Result(); err != nil || name != "TestSentinel" {
		t.Fatalf("CLIENT GETNAME = %q, %v", name, err)
	}
	// set writes through the failover client, retrying while it finds
	// the new primary, and checks the value is on want.
	set := func(key string, want *redistest.Server) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var err error
		for tries := 1; ; tries++ {
			if err = c.Set(ctx, key, "v", 0).Err(); err == nil {
				if tries > 1 {
					t.Logf("SET %s succeeded at try %d", key, tries)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("SET %s through the failover client: %v", key, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if v, err := want.Client(t).Get(ctx, key).Result(); err != nil || v != "v" {
			t.Fatalf("GET %s on %s = %q, %v", key, want.Addr(), v, err)
		}
	}
	set("TestSentinel:1", s.Primary())
	if n, err := s.Primary().Client(t).Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT = %d, %v", n, err)
	}

	oldPrimary, oldReplica := s.Primary(), s.Replica()
	d := s.KillPrimary(t)
	t.Logf("promotion after a kill took %v", d)
	if s.Primary() != oldReplica || s.Replica() != oldPrimary {
		t.Fatalf("after KillPrimary: primary %s, replica %s", s.Primary().Addr(), s.Replica().Addr())
	}
	set("TestSentinel:2", oldReplica)
	if v, err := c.Get(ctx, "TestSentinel:1").Result(); err != nil || v != "v" {
		t.Fatalf("GET of a replicated key after the failover = %q, %v", v, err)
	}

	start = time.Now()
	s.RestartOld(t)
	t.Logf("old primary back as a replica in %v", time.Since(start))
	assertReplica(oldPrimary, oldReplica)
	s.RestartOld(t) // nothing to do

	d = s.Failover(t)
	t.Logf("SENTINEL FAILOVER took %v", d)
	if s.Primary() != oldPrimary || s.Replica() != oldReplica {
		t.Fatalf("after Failover: primary %s, replica %s", s.Primary().Addr(), s.Replica().Addr())
	}
	assertReplica(oldReplica, oldPrimary)
	set("TestSentinel:3", oldPrimary)
	if v, err := c.Get(ctx, "TestSentinel:2").Result(); err != nil || v != "v" {
		t.Fatalf("GET after the graceful failover = %q, %v", v, err)
	}
}

func TestSentinelStartFailures(t *testing.T) {
	failure := func(opts ...redistest.Option) string {
		t.Helper()
		f := &fatalTB{TB: t}
		done := make(chan *redistest.Sentinel)
		go func() {
			var s *redistest.Sentinel
			defer func() { done <- s }()
			s = redistest.StartSentinel(f, opts...)
		}()
		if s := <-done; s != nil {
			t.Fatalf("StartSentinel succeeded with %v", s.SentinelAddrs())
		}
		if f.skipped {
			t.Fatal("StartSentinel skipped the test instead of failing it")
		}
		return f.msg
	}
	if msg := failure(redistest.WithPort(7000)); !strings.Contains(msg, "WithPort") {
		t.Errorf("StartSentinel with WithPort failed with %q", msg)
	}
	t.Setenv("REDIS_SERVER", "")
	t.Setenv("PATH", t.TempDir())
	if msg := failure(); !strings.Contains(msg, install) {
		t.Errorf("StartSentinel without redis-server failed with %q", msg)
	}
}
