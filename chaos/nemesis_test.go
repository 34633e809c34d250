package chaos

import (
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func testRedis(t *testing.T, cfg RedisConfig) *RedisServer {
	t.Helper()
	srv, err := StartRedis(t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Error(err)
		}
	})
	return srv
}

func testNemesis(t *testing.T, srv *RedisServer, fault string) *nemesis {
	t.Helper()
	rec, err := NewRecorder(filepath.Join(t.TempDir(), "nemesis.jsonl"), -2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rec.Close() })
	n := &nemesis{fault: fault, ttl: 200 * time.Millisecond, rec: rec, redis: srv, admin: srv.RunnerClient()}
	t.Cleanup(func() { _ = n.admin.Close() })
	return n
}

// TestRedisRestart checks that a restart keeps the address, loses the data
// without AOF and keeps it with AOF, and that Stop still works afterwards
// (the cleanup of testRedis).
func TestRedisRestart(t *testing.T) {
	for _, aof := range []bool{false, true} {
		srv := testRedis(t, RedisConfig{AOF: aof})
		c := srv.RunnerClient()
		if err := c.Set(t.Context(), "k", "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		addr, pid := srv.Addr, srv.Process().Pid
		if err := srv.Restart(50 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if srv.Addr != addr || srv.Process().Pid == pid {
			t.Fatalf("aof %t: restarted at %s pid %d, was %s pid %d", aof, srv.Addr, srv.Process().Pid, addr, pid)
		}
		n, err := c.Exists(t.Context(), "k").Result()
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int64{false: 0, true: 1}[aof]; n != want {
			t.Fatalf("aof %t: EXISTS k = %d after restart, want %d", aof, n, want)
		}
		_ = c.Close()
	}
}

// TestKillConns checks that client-kill kills the unsubscribed connections
// and client-kill-pubsub the subscribed ones, and both spare the runner's.
func TestKillConns(t *testing.T) {
	srv := testRedis(t, RedisConfig{})
	n := testNemesis(t, srv, FaultClientKill)
	ctx := t.Context()
	id := func(c *redis.Client) int64 {
		t.Helper()
		v, err := c.ClientID(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1})
	defer plain.Close()
	subs := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer subs.Close()
	ps := subs.Subscribe(ctx, "ch")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	runnerSubs := n.admin.Subscribe(ctx, "ch")
	defer runnerSubs.Close()
	if _, err := runnerSubs.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	plainID, adminID := id(plain), id(n.admin)

	list := func() string {
		t.Helper()
		s, err := n.admin.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := killable(list(), false); !slices.Equal(got, []string{strconv.FormatInt(plainID, 10)}) {
		t.Fatalf("killable normal connections %v, want [%d]:\n%s", got, plainID, list())
	}
	if got := killable(list(), true); len(got) != 1 {
		t.Fatalf("killable pubsub connections %v, want one:\n%s", got, list())
	}

	if did, err := n.killConns(ctx, false); err != nil || !did {
		t.Fatalf("killConns(normal) = %t, %v", did, err)
	}
	if got := id(n.admin); got != adminID {
		t.Fatalf("runner connection replaced (id %d, was %d)", got, adminID)
	}
	if got := id(plain); got == plainID {
		t.Fatal("normal connection not killed")
	}
	if did, err := n.killConns(ctx, true); err != nil || !did {
		t.Fatalf("killConns(pubsub) = %t, %v", did, err)
	}
	// The runner's subscription survives; the client's is gone (go-redis
	// subscribes again only when ps is next read).
	if got := killable(list(), true); len(got) != 0 {
		t.Fatalf("pubsub connections left %v:\n%s", got, list())
	}
	if err := n.admin.Publish(ctx, "ch", "m").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := runnerSubs.ReceiveTimeout(ctx, 2*time.Second); err != nil {
		t.Fatalf("runner subscription: %v", err)
	}
}
