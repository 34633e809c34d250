package distlocktest_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/distlocktest"
	"github.com/distlock/distlock/mutex"
)

// newMutex returns a Mutex on client with a prefix unique to the test,
// closed at cleanup.
func newMutex(t testing.TB, client redis.UniversalClient, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	cfg.Prefix = strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
	m, err := mutex.New(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func serverTime(t testing.TB, c redis.UniversalClient) time.Time {
	t.Helper()
	now, err := c.Time(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return now
}

// TestMiniredisMutex runs the real Mutex on the server of NewMiniredis,
// whose clock is the wall clock.
func TestMiniredisMutex(t *testing.T) {
	_, c := distlocktest.NewMiniredis(t)
	m := newMutex(t, c, mutex.Config{TTL: time.Minute})
	ctx := t.Context()
	var last int64
	for range 20 {
		l, err := m.Lock(ctx, "a", "b")
		if err != nil {
			t.Fatal(err)
		}
		if l.Fence() <= last {
			t.Fatalf("fence %d after %d", l.Fence(), last)
		}
		last = l.Fence()
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAdvanceExpiresKeys(t *testing.T) {
	mr, c := distlocktest.NewMiniredis(t)
	m := newMutex(t, c, mutex.Config{TTL: time.Minute})
	ctx := t.Context()
	l, err := m.Lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	distlocktest.Advance(mr, time.Minute-time.Millisecond)
	if st, _ := m.Check(ctx, "a"); st != mutex.Locked {
		t.Fatalf("key %v before its TTL", st)
	}
	distlocktest.Advance(mr, time.Millisecond)
	if st, _ := m.Check(ctx, "a"); st != mutex.Available {
		t.Fatalf("key %v after its TTL", st)
	}
	// The lease's own validity runs on the local clock: its Extend finds
	// the key gone.
	if l.Err() != nil {
		t.Fatalf("lease ended on the local clock: %v", l.Err())
	}
	if err := l.Extend(ctx); !errors.Is(err, mutex.ErrNotHeld) {
		t.Fatalf("Extend after the key expired: %v", err)
	}
	next, err := m.TryLock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if next.Fence() <= l.Fence() {
		t.Fatalf("fence %d after %d", next.Fence(), l.Fence())
	}
}

// TestAdvanceFixedClock: on a server whose clock the test fixed, Advance
// moves that clock with the TTLs, so that a grant after an expiry gets a
// greater fence; FastForward alone would repeat it.
func TestAdvanceFixedClock(t *testing.T) {
	mr, c := distlocktest.NewMiniredis(t)
	fixed := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mr.SetTime(fixed)
	m := newMutex(t, c, mutex.Config{TTL: time.Minute})
	ctx := t.Context()

	l, err := m.TryLock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	distlocktest.Advance(mr, time.Minute)
	if now := serverTime(t, c); !now.Equal(fixed.Add(time.Minute)) {
		t.Fatalf("server clock %v, want %v", now, fixed.Add(time.Minute))
	}
	next, err := m.TryLock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if next.Fence() <= l.Fence() {
		t.Fatalf("fence %d after %d", next.Fence(), l.Fence())
	}

	// The clock stands still until the next Advance: the release is
	// refused, and the key kept.
	err = next.Unlock(ctx)
	if !errors.Is(err, mutex.ErrClockStalled) {
		t.Fatalf("Unlock on a clock that did not move: %v", err)
	}
	if st, _ := m.Check(ctx, "a"); st != mutex.Locked {
		t.Fatalf("key %v after a refused release", st)
	}
	distlocktest.Advance(mr, time.Microsecond)
	if err := next.Unlock(ctx); err != nil {
		t.Fatalf("Unlock once the clock moved: %v", err)
	}

	// FastForward alone expires keys without moving the clock: the next
	// grant repeats the fence of the expired one.
	third, err := m.TryLock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	mr.FastForward(time.Minute)
	fourth, err := m.TryLock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if fourth.Fence() != third.Fence() {
		t.Fatalf("FastForward alone: fence %d after %d, want it repeated", fourth.Fence(), third.Fence())
	}
}

// TestAdvanceWallClock: Advance leaves a clock that follows the wall clock
// alone, so that it keeps moving.
func TestAdvanceWallClock(t *testing.T) {
	mr, c := distlocktest.NewMiniredis(t)
	distlocktest.Advance(mr, time.Hour)
	first := serverTime(t, c)
	if d := time.Since(first); d < -time.Minute || d > time.Minute {
		t.Fatalf("server clock %v, %v from the wall clock", first, d)
	}
	time.Sleep(2 * time.Millisecond)
	if second := serverTime(t, c); !second.After(first) {
		t.Fatalf("server clock stands still at %v after Advance", first)
	}
}

// TestAdvanceWakesLock: a Lock waiting for a key that Advance expires
// tries again at once, long before its own re-check at the holder's TTL.
func TestAdvanceWakesLock(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		name := "plain"
		if fifo {
			name = "fifo"
		}
		t.Run(name, func(t *testing.T) {
			mr, c := distlocktest.NewMiniredis(t)
			m := newMutex(t, c, mutex.Config{TTL: time.Minute, FIFO: fifo})
			ctx := t.Context()
			l, err := m.TryLock(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			ch := make(chan error, 1)
			go func() {
				next, err := m.Lock(ctx, "a")
				if err == nil && next.Fence() <= l.Fence() {
					err = errors.New("fence not greater")
				}
				ch <- err
			}()
			waitFor(t, func() bool {
				if fifo {
					// The waiter queued in Redis.
					n, _ := c.ZCard(ctx, m.Prefix()+":{a}:q").Result()
					return n > 0
				}
				return mr.PubSubNumSub(m.Prefix() + ":{a}")[m.Prefix()+":{a}"] > 0
			})
			distlocktest.Advance(mr, time.Minute)
			select {
			case err := <-ch:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Lock not woken by Advance")
			}
		})
	}
}

func TestAdvanceNoop(t *testing.T) {
	distlocktest.Advance(nil, time.Second)
	mr := miniredis.RunT(t)
	if err := mr.Set("k", "v"); err != nil {
		t.Fatal(err)
	}
	mr.SetTTL("k", time.Second)
	distlocktest.Advance(mr, 0)
	distlocktest.Advance(mr, -time.Hour)
	if got := mr.TTL("k"); got != time.Second {
		t.Fatalf("TTL %v after Advance by zero or less", got)
	}
	// A server that refuses commands: TTLs still move, the clock is left.
	mr.SetError("LOADING")
	distlocktest.Advance(mr, time.Second)
	mr.SetError("")
	if mr.Exists("k") {
		t.Fatal("key kept after its TTL")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}
