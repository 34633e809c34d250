package chaos_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distlock/distlock/chaos"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// waitFor polls until the watcher's history has an event that match
// accepts.
func waitFor(t *testing.T, dir, what string, match func(chaos.Event) bool) chaos.Event {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		events, err := chaos.ReadHistory(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if match(e) {
				return e
			}
		}
	}
	t.Fatalf("watcher recorded no %s", what)
	return chaos.Event{}
}

func redisEvent(typ, key, token string) func(chaos.Event) bool {
	return func(e chaos.Event) bool {
		return e.Op == chaos.OpRedis && e.Type == typ && len(e.Keys) == 1 && e.Keys[0] == key && e.Token == token
	}
}

// TestWatcher follows lock keys through sets, deletes, expiries, a paused
// server, a CLIENT KILL of pub/sub connections and a restart, then finds
// the leftovers and stops without leaking goroutines.
func TestWatcher(t *testing.T) {
	if _, err := chaos.RedisBinary(); err != nil {
		t.Fatal(err)
	}
	baseline := goleak.IgnoreCurrent()
	dir := t.TempDir()
	srv, err := chaos.StartRedis(dir, chaos.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	hist := t.TempDir()
	rec, err := chaos.NewRecorder(filepath.Join(hist, "watcher.jsonl"), chaos.WatcherClient)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	ctx := context.Background()
	w, err := chaos.StartWatcher(ctx, srv.Addr, rec)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Set(ctx, "chaos:{hot}", "tokA:1700000000000000", time.Minute).Err())
	must(c.Set(ctx, "chaos:{hot}:q", "1", time.Minute).Err()) // not a lock key
	set := waitFor(t, hist, "set of hot", redisEvent(chaos.TypeSet, "hot", "tokA"))
	if set.Fence != 1700000000000000 || set.Expires <= set.T {
		t.Fatalf("set event: %+v", set)
	}
	must(c.Del(ctx, "chaos:{hot}").Err())
	must(c.Set(ctx, "chaos:{cold0}", "tokB:1700000000000001", 50*time.Millisecond).Err())
	waitFor(t, hist, "del of hot", redisEvent(chaos.TypeDel, "hot", ""))
	waitFor(t, hist, "expiry of cold0", redisEvent(chaos.TypeExpired, "cold0", ""))

	// A paused server is no gap.
	must(srv.Pause())
	time.Sleep(300 * time.Millisecond)
	must(srv.Resume())
	must(c.Set(ctx, "chaos:{cold1}", "tokC:1", time.Minute).Err())
	waitFor(t, hist, "set after a pause", redisEvent(chaos.TypeSet, "cold1", "tokC"))

	// CLIENT KILL of pub/sub connections: a gap, and cold1 still present at
	// its end.
	must(c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err())
	waitFor(t, hist, "gap end after CLIENT KILL", func(e chaos.Event) bool {
		return e.Op == chaos.OpWatcherGap && e.Type == chaos.TypeOK
	})
	waitFor(t, hist, "cold1 present after the gap", redisEvent(chaos.TypePresent, "cold1", "tokC"))
	must(c.Set(ctx, "chaos:{cold2}", "tokD:2", time.Minute).Err())
	waitFor(t, hist, "set after CLIENT KILL", redisEvent(chaos.TypeSet, "cold2", "tokD"))

	// A restarted server forgets the notification setting.
	must(srv.Restart(100 * time.Millisecond))
	waitFor(t, hist, "two gaps", func(e chaos.Event) bool {
		events, _ := chaos.ReadHistory(hist)
		n := 0
		for _, e := range events {
			if e.Op == chaos.OpWatcherGap && e.Type == chaos.TypeOK {
				n++
			}
		}
		return n == 2
	})
	must(c.Set(ctx, "chaos:{hot}", "tokE:3", 0).Err()) // no TTL
	waitFor(t, hist, "set after a restart", redisEvent(chaos.TypeSet, "hot", "tokE"))
	must(c.Set(ctx, "chaos:{hot}:d", "1", 0).Err())
	must(c.Set(ctx, "chaos:{hot}:x:tokF", "1", time.Minute).Err())

	must(w.Leftovers(ctx))
	must(w.Stop())
	must(w.Stop())
	events, err := chaos.ReadHistory(hist)
	if err != nil {
		t.Fatal(err)
	}
	left := map[string]string{}
	var gaps int
	for _, e := range events {
		switch e.Op {
		case chaos.OpLeftover:
			left[e.Keys[0]] = e.Type
		case chaos.OpWatcherGap:
			if e.Type == chaos.TypeInvoke {
				gaps++
			}
		case chaos.OpRedis:
			if strings.Contains(e.Keys[0], ":") {
				t.Errorf("event on a key that is not a lock key: %+v", e)
			}
		}
	}
	want := map[string]string{"chaos:{hot}": chaos.TypeLockNoTTL, "chaos:{hot}:d": chaos.TypePersistent,
		"chaos:{hot}:x:tokF": chaos.TypeExpiring}
	if len(left) != len(want) || gaps != 2 {
		t.Fatalf("leftovers %v (want %v), %d gaps (want 2)", left, want, gaps)
	}
	for k, typ := range want {
		if left[k] != typ {
			t.Fatalf("leftovers %v, want %v", left, want)
		}
	}
	r := chaos.Check(events)
	if r.WatcherGaps != 2 || r.LostGrants != 5 || r.LeftoverLocksNoTTL != 1 || r.LeftoverPersistent != 1 || !r.Broken() {
		t.Fatalf("Check: %+v", r)
	}

	must(c.Close())
	must(srv.Stop())
	if err := goleak.Find(baseline); err != nil {
		t.Fatal(err)
	}
}
