package chaos

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// watchedEvent polls the history in dir until an event matches.
func watchedEvent(t *testing.T, dir, what string, match func(Event) bool) Event {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		events, err := ReadHistory(dir)
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
	return Event{}
}

func lockEvent(typ, key, token string) func(Event) bool {
	return func(e Event) bool {
		return e.Op == OpRedis && e.Type == typ && len(e.Keys) == 1 && e.Keys[0] == key && e.Token == token
	}
}

// gapEnds returns a matcher of the n-th end of a gap.
func gapEnds(dir string, n int) func(Event) bool {
	return func(e Event) bool {
		if e.Op != OpWatcherGap || e.Type != TypeOK {
			return false
		}
		events, _ := ReadHistory(dir)
		k := 0
		for _, e := range events {
			if e.Op == OpWatcherGap && e.Type == TypeOK {
				k++
			}
		}
		return k >= n
	}
}

// TestWatcherCluster follows lock keys on every primary of a Cluster
// through an announced failover, an announced slot migration and a
// failover it finds itself, then finds the leftovers on every primary.
func TestWatcherCluster(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	ctx := context.Background()
	d, err := startDeployment(ctx, t.TempDir(), DeployCluster)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h, c := d.h, d.cluster
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	hist := t.TempDir()
	rec, err := NewRecorder(filepath.Join(hist, "watcher.jsonl"), WatcherClient)
	must(err)
	defer rec.Close()
	w, err := WatchTopology(ctx, d.Topology(), rec)
	must(err)
	defer w.Stop()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()

	// Keys on more than one primary.
	primaries := map[string]bool{}
	for i, k := range []string{"hot", "cold0", "cold1", "cold2"} {
		rkey := "chaos:{" + k + "}"
		must(cc.Set(ctx, rkey, "tok"+k+":"+string(rune('1'+i)), time.Minute).Err())
		watchedEvent(t, hist, "set of "+k, lockEvent(TypeSet, k, "tok"+k))
		must(h.run(func() { primaries[c.PrimaryFor(h, rkey).Addr()] = true }))
	}
	if len(primaries) < 2 {
		t.Fatalf("the keys are on %d primaries", len(primaries))
	}

	// An announced failover of hot's shard: a gap, hot present at its end,
	// and the new primary's notifications followed.
	w.BeginChange("failover")
	must(h.run(func() { c.Failover(h, hotRedisKey) }))
	w.EndChange()
	watchedEvent(t, hist, "the end of the failover's gap", gapEnds(hist, 1))
	watchedEvent(t, hist, "hot present after the failover", lockEvent(TypePresent, "hot", "tokhot"))
	must(cc.Set(ctx, hotRedisKey, "tokE:5", time.Minute).Err())
	watchedEvent(t, hist, "set on the new primary", lockEvent(TypeSet, "hot", "tokE"))

	// An announced migration of hot's slot.
	var to *redistest.Server
	must(h.run(func() {
		from := c.PrimaryFor(h, hotRedisKey)
		for _, p := range c.Primaries(h) {
			if p.Addr() != from.Addr() {
				to = p
			}
		}
	}))
	w.BeginChange("migration")
	must(h.run(func() { c.MigrateSlot(h, redistest.Slot(hotRedisKey), to) }))
	w.EndChange()
	watchedEvent(t, hist, "the end of the migration's gap", gapEnds(hist, 2))
	watchedEvent(t, hist, "hot present after the migration", lockEvent(TypePresent, "hot", "tokE"))
	must(cc.Del(ctx, hotRedisKey).Err())
	watchedEvent(t, hist, "del on the slot's new owner", lockEvent(TypeDel, "hot", ""))

	// A failover nobody announced: the watcher finds the layout changed.
	must(h.run(func() { c.Failover(h, "chaos:{cold0}") }))
	watchedEvent(t, hist, "an unannounced layout change", func(e Event) bool {
		return e.Op == OpWatcherGap && e.Type == TypeInvoke && strings.Contains(e.Note, "unannounced")
	})
	watchedEvent(t, hist, "the end of its gap", gapEnds(hist, 3))
	must(cc.Set(ctx, "chaos:{cold0}", "tokF:6", time.Minute).Err())
	watchedEvent(t, hist, "set after the unannounced failover", lockEvent(TypeSet, "cold0", "tokF"))

	must(w.Leftovers(ctx))
	must(w.Stop())
	events, err := ReadHistory(hist)
	must(err)
	left := map[string]string{}
	for _, e := range events {
		if e.Op == OpLeftover {
			left[e.Keys[0]] = e.Type
		}
	}
	if len(left) != 3 || left["chaos:{cold0}"] != TypeLock || left["chaos:{cold1}"] != TypeLock || left["chaos:{cold2}"] != TypeLock {
		t.Fatalf("leftovers %v, want the three cold lock keys", left)
	}
	if r := Check(events); r.WatcherGaps != 3 || r.WatcherUnknownValues != 0 {
		t.Fatalf("Check: %d gaps (want 3), %d unknown values", r.WatcherGaps, r.WatcherUnknownValues)
	}
	must(cc.Close())
	must(d.Close())
	if err := goleak.Find(baseline); err != nil {
		t.Fatal(err)
	}
}

// A value read while a later change of the key is queued may be that of
// the change, whatever its fence says.
func TestChangePending(t *testing.T) {
	w := &Watcher{queue: []note{
		{rkey: "chaos:{hot}", event: TypeExpire},
		{rkey: "chaos:{cold0}", event: TypeDel},
		{rkey: "chaos:{cold1}", event: TypeExpired},
		{rkey: "chaos:{cold2}", event: TypeSet},
	}}
	for rkey, want := range map[string]bool{"chaos:{hot}": false, "chaos:{cold0}": true, "chaos:{cold1}": true,
		"chaos:{cold2}": true, "chaos:{other}": false} {
		if got := w.changePending(rkey); got != want {
			t.Errorf("changePending(%s) = %t, want %t", rkey, got, want)
		}
	}
}
