package mutex_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// TestReleaseFencesIncrease takes and releases keys in quick succession on
// real servers, whose clocks move: every release succeeds at once, and
// every grant gets a greater fence than the one before.
func TestReleaseFencesIncrease(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, b redistest.Backend) {
		ctx := t.Context()
		m := backendMutex(t, b, mutex.Config{Prefix: prefix(t), TTL: time.Minute})
		fences := map[string]int64{}
		for i := range 200 {
			keys := []string{"a"}
			if i%2 == 1 {
				keys = []string{"a", "b"}
			}
			l := must[mutex.Lease](t)(m.TryLock(ctx, keys...))
			for _, k := range keys {
				if f := l.FenceOf(k); f <= fences[k] {
					t.Fatalf("grant %d: fence of %q %d after %d", i, k, f, fences[k])
				}
				fences[k] = l.FenceOf(k)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatalf("unlock %d: %v", i, err)
			}
		}
		if left := keysLeft(t, b.Client(t), prefix(t)); len(left) != 0 {
			t.Fatalf("keys left: %v", left)
		}
	})
}

// TestReleaseScriptClockBehind runs the release script on a real server
// with a fence ahead of the server's clock, as if the clock had stepped
// back: the script fails with a CLOCK error and keeps the key, whether or
// not the lease is young.
func TestReleaseScriptClockBehind(t *testing.T) {
	for _, name := range []string{"release", "fifo_release"} {
		t.Run(name, func(t *testing.T) { releaseClockBehind(t, name) })
	}
}

func releaseClockBehind(t *testing.T, name string) {
	lib, err := os.ReadFile("scripts/lib.lua")
	if err != nil {
		t.Fatal(err)
	}
	release, err := os.ReadFile("scripts/" + name + ".lua")
	if err != nil {
		t.Fatal(err)
	}
	script := redis.NewScript(string(lib) + string(release))
	c := redistest.Shared(t).Client(t)
	ctx := context.Background()
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	fence := strconv.FormatInt(now.Add(time.Hour).UnixMicro(), 10)
	key := prefix(t) + ":{k}"
	keys := []string{key}
	if name == "fifo_release" {
		keys = append(keys, key+":q")
	}
	run := func(value, fence, young string) *redis.Cmd {
		return script.Run(ctx, c, keys, value, fence, young, "0", "1000")
	}
	value := "token:" + fence
	for _, young := range []string{"0", "1"} {
		if err := c.Set(ctx, key, value, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		err := run(value, fence, young).Err()
		if !redis.HasErrorPrefix(err, "CLOCK") {
			t.Fatalf("young=%s: release with a fence ahead of the clock: %v, want a CLOCK error", young, err)
		}
		if v, err := c.Get(ctx, key).Result(); err != nil || v != value {
			t.Fatalf("young=%s: key after the refused release: %q, %v", young, v, err)
		}
	}
	// A fence behind the clock releases the key.
	past := strconv.FormatInt(now.Add(-time.Second).UnixMicro(), 10)
	if err := c.Set(ctx, key, "token:"+past, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := run("token:"+past, past, "0").Int()
	if err != nil || n != 1 {
		t.Fatalf("release: %d, %v; want 1", n, err)
	}
	if left := keysLeft(t, c, prefix(t)); len(left) != 0 {
		t.Fatalf("keys left: %v", left)
	}
}
