package distlocktest_test

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/mutex"
)

func mustLease(t testing.TB) func(mutex.Lease, error) mutex.Lease {
	return func(l mutex.Lease, err error) mutex.Lease {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
}

func mustStatus(t testing.TB) func(mutex.Status, error) mutex.Status {
	return func(s mutex.Status, err error) mutex.Status {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// frozenMiniredis returns a miniredis whose clock (TIME) stands still at a
// fixed moment, and a client of it closed at cleanup.
func frozenMiniredis(t *testing.T) (*miniredis.Miniredis, redis.UniversalClient) {
	t.Helper()
	mr := miniredis.RunT(t)
	mr.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return mr, c
}

// TestFrozenClockFences takes and releases a key again and again on a
// server whose clock stands still: no grant may get the fence of the one
// before it. An Unlock right after the grant asks the release script to
// wait for the clock, a later one does not; both must refuse to release.
func TestFrozenClockFences(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		for _, pause := range []time.Duration{0, 5 * time.Millisecond} {
			t.Run(fmt.Sprintf("fifo=%v/pause=%v", fifo, pause), func(t *testing.T) { frozenClockFences(t, fifo, pause) })
		}
	}
}

func frozenClockFences(t *testing.T, fifo bool, pause time.Duration) {
	ctx := t.Context()
	_, c := frozenMiniredis(t)
	m := newMutex(t, c, mutex.Config{TTL: time.Minute, FIFO: fifo})

	var last int64
	for i := range 3 {
		l, err := m.TryLock(ctx, "k")
		if err != nil {
			if i > 0 && errors.Is(err, mutex.ErrNotObtained) {
				// The refused release kept the key held.
				break
			}
			t.Fatalf("grant %d: %v", i, err)
		}
		if l.Fence() <= last {
			t.Fatalf("grant %d got fence %d after %d", i, l.Fence(), last)
		}
		last = l.Fence()
		time.Sleep(pause)
		err = l.Unlock(ctx)
		if err == nil {
			continue
		}
		if !errors.Is(err, mutex.ErrClockStalled) {
			t.Fatalf("unlock %d: %v, want ErrClockStalled", i, err)
		}
		if l.Err() != nil {
			t.Fatalf("lease ended by a refused release: %v", l.Err())
		}
		if st := mustStatus(t)(m.Check(ctx, "k")); st != mutex.Locked {
			t.Fatalf("key %v after a refused release, want locked", st)
		}
	}
	if last == 0 {
		t.Fatal("no grant")
	}
}

// TestFrozenClockUnlockError checks the error of a release refused on a
// stalled clock, and that the release succeeds once the clock moves on,
// after which the next grant gets a greater fence.
func TestFrozenClockUnlockError(t *testing.T) {
	ctx := t.Context()
	mr, c := frozenMiniredis(t)
	m := newMutex(t, c, mutex.Config{TTL: time.Minute})

	l := mustLease(t)(m.TryLock(ctx, "a", "b"))
	err := l.Unlock(ctx)
	if !errors.Is(err, mutex.ErrClockStalled) {
		t.Fatalf("unlock on a stalled clock: %v, want ErrClockStalled", err)
	}
	want := "unlock: mutex: server clock stalled: the clock has not passed the lease's fence " +
		strconv.FormatInt(l.Fence(), 10) + "; the keys stay held until their TTL runs out"
	if err.Error() != want {
		t.Errorf("error\n%q, want\n%q", err, want)
	}
	if errors.Is(err, mutex.ErrNotHeld) || errors.Is(err, mutex.ErrReleased) {
		t.Errorf("error %v matches a lost or released lease", err)
	}
	var nerr *mutex.NotObtainedError
	if _, err := m.TryLock(ctx, "b"); !errors.As(err, &nerr) || nerr.Key != "b" {
		t.Fatalf("TryLock of a kept key: %v, want not obtained on \"b\"", err)
	}

	mr.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 1000, time.UTC)) // one microsecond on
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("unlock once the clock moved: %v", err)
	}
	if !errors.Is(l.Err(), mutex.ErrReleased) {
		t.Fatalf("lease error %v after Unlock, want ErrReleased", l.Err())
	}
	next := mustLease(t)(m.TryLock(ctx, "a", "b"))
	if next.Fence() <= l.Fence() {
		t.Fatalf("fence %d after %d", next.Fence(), l.Fence())
	}
	if err := next.Unlock(ctx); !errors.Is(err, mutex.ErrClockStalled) {
		t.Fatalf("unlock on a stalled clock again: %v, want ErrClockStalled", err)
	}
}
