package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// clusterMutex returns a Mutex on its own client of the package's shared
// Cluster, closed at cleanup.
func clusterMutex(t testing.TB, cfg mutex.Config) (*mutex.Mutex, *redis.ClusterClient) {
	t.Helper()
	c := redistest.SharedCluster(t).Client(t)
	m, err := mutex.New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, c
}

// spread returns n keys that start with p and hash to n different slots
// (each key is its own hash tag).
func spread(p string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%d", p, i)
	}
	return keys
}

// clusterKeysLeft returns the Redis keys that start with p on every primary.
func clusterKeysLeft(t testing.TB, c *redis.ClusterClient, p string) []string {
	t.Helper()
	return must[[]string](t)(redistest.Keys(t.Context(), c, p+"*"))
}

func TestClusterMultiKeyAcrossSlots(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			ctx := t.Context()
			p := prefix(t)
			m, c := clusterMutex(t, mutex.Config{Prefix: p, TTL: 2 * time.Second, FIFO: fifo})
			keys := spread("k", 6)
			l := must[mutex.Lease](t)(m.Lock(ctx, keys...))
			if got := l.Keys(); fmt.Sprint(got) != fmt.Sprint(keys) {
				t.Fatalf("Keys() = %v, want %v", got, keys)
			}
			if st := must[mutex.Status](t)(m.Check(ctx, keys...)); st != mutex.Locked {
				t.Fatalf("Check = %v, want locked", st)
			}
			if st := must[mutex.Status](t)(m.Check(ctx, keys[1], "free")); st != mutex.PartiallyLocked {
				t.Fatalf("Check = %v, want partially locked", st)
			}
			if l.Fence() != l.FenceOf(keys[0]) {
				t.Fatalf("Fence() = %d, FenceOf(first) = %d", l.Fence(), l.FenceOf(keys[0]))
			}
			for _, k := range keys {
				if l.FenceOf(k) <= 0 {
					t.Fatalf("FenceOf(%q) = %d", k, l.FenceOf(k))
				}
			}
			if f := l.FenceOf("not-held"); f != 0 {
				t.Fatalf("FenceOf of a key not held = %d", f)
			}
			// Another Mutex finds every key held, whichever it asks for.
			other, _ := clusterMutex(t, mutex.Config{Prefix: p, TTL: 2 * time.Second, FIFO: fifo})
			_, err := other.TryLock(ctx, keys[5], "free-1", "free-2")
			var noe *mutex.NotObtainedError
			if !errors.As(err, &noe) || noe.Key != keys[5] {
				t.Fatalf("TryLock = %v, want not obtained on %q", err, keys[5])
			}
			// The failed TryLock released the groups it took first.
			if st := must[mutex.Status](t)(m.Check(ctx, "free-1", "free-2")); st != mutex.Available {
				t.Fatalf("Check after a failed TryLock = %v, want available", st)
			}
			if err := l.Extend(ctx); err != nil {
				t.Fatal(err)
			}
			if d, ok := mutex.Deadline(l); !ok || time.Until(d) < time.Second {
				t.Fatalf("deadline after Extend = %v", time.Until(d))
			}
			if errs := mutex.ExtendMany(ctx, l); errs[0] != nil {
				t.Fatal(errs[0])
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if !errors.Is(l.Err(), mutex.ErrReleased) {
				t.Fatalf("Err after Unlock = %v", l.Err())
			}
			if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrReleased) {
				t.Fatalf("second Unlock = %v", err)
			}
			l2 := must[mutex.Lease](t)(other.TryLock(ctx, keys...))
			for _, k := range keys {
				if l2.FenceOf(k) <= l.FenceOf(k) {
					t.Fatalf("fence of %q went from %d to %d", k, l.FenceOf(k), l2.FenceOf(k))
				}
			}
			if err := l2.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if left := clusterKeysLeft(t, c, p); len(left) > 0 {
				t.Fatalf("keys left: %v", left)
			}
		})
	}
}

// Lock calls on the same keys in opposite orders, from several Mutexes,
// take the slot groups in one global order and so never deadlock.
func TestClusterMultiKeyOppositeOrders(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			p := prefix(t)
			keys := spread("k", 4)
			var inside atomic.Int32
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for i := range 4 {
				m, _ := clusterMutex(t, mutex.Config{Prefix: p, TTL: time.Second, FIFO: fifo})
				order := append([]string(nil), keys...)
				if i%2 == 1 {
					for a, b := 0, len(order)-1; a < b; a, b = a+1, b-1 {
						order[a], order[b] = order[b], order[a]
					}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 10 {
						l, err := m.Lock(ctx, order...)
						if err != nil {
							errs <- err
							return
						}
						if n := inside.Add(1); n != 1 {
							errs <- fmt.Errorf("%d holders at once", n)
						}
						inside.Add(-1)
						if err := l.Unlock(ctx); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		})
	}
}

// A multi-slot Lock that waits for a later group keeps the groups it holds
// alive past their TTL, and gives them up when its context ends.
func TestClusterMultiKeyWaitHoldsEarlierGroups(t *testing.T) {
	ctx := t.Context()
	p := prefix(t)
	ttl := 300 * time.Millisecond
	m, c := clusterMutex(t, mutex.Config{Prefix: p, TTL: ttl})
	holder, _ := clusterMutex(t, mutex.Config{Prefix: p, TTL: 10 * time.Second})
	keys := spread("k", 3)
	// The group taken last is the one of the highest slot.
	last := keys[0]
	for _, k := range keys {
		if redistest.Slot(k) > redistest.Slot(last) {
			last = k
		}
	}
	hl := must[mutex.Lease](t)(holder.Lock(ctx, last))
	wctx, cancel := context.WithTimeout(ctx, 4*ttl)
	defer cancel()
	done := lockAsync(wctx, m, keys...)
	time.Sleep(2 * ttl)
	// The other keys are still held by the waiter, past their TTL.
	for _, k := range keys {
		if k == last {
			continue
		}
		if st := must[mutex.Status](t)(m.Check(ctx, k)); st != mutex.Locked {
			t.Fatalf("%q is %v while the waiter waits", k, st)
		}
	}
	g := <-done
	if !errors.Is(g.err, mutex.ErrNotObtained) || !errors.Is(g.err, context.DeadlineExceeded) {
		t.Fatalf("Lock = %v, want not obtained by the deadline", g.err)
	}
	for _, k := range keys {
		if k == last {
			continue
		}
		if st := must[mutex.Status](t)(m.Check(ctx, k)); st != mutex.Available {
			t.Fatalf("%q is %v after the waiter gave up", k, st)
		}
	}
	if err := hl.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	// Now it goes through.
	l := must[mutex.Lease](t)(m.Lock(ctx, keys...))
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if left := clusterKeysLeft(t, c, p); len(left) > 0 {
		t.Fatalf("keys left: %v", left)
	}
}

// A multi-slot lease ends as a whole when one of its groups is lost.
func TestClusterMultiKeyLostGroup(t *testing.T) {
	ctx := t.Context()
	p := prefix(t)
	m, c := clusterMutex(t, mutex.Config{Prefix: p, TTL: 5 * time.Second})
	keys := spread("k", 3)
	l := must[mutex.Lease](t)(m.Lock(ctx, keys...))
	if err := c.Del(ctx, p+":{"+keys[1]+"}").Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.Extend(ctx); !errors.Is(err, mutex.ErrNotHeld) {
		t.Fatalf("Extend = %v, want not held", err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after the loss")
	}
	if !errors.Is(l.Err(), mutex.ErrNotHeld) {
		t.Fatalf("Err = %v", l.Err())
	}
	if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrNotHeld) {
		t.Fatalf("Unlock = %v, want not held", err)
	}
	if left := clusterKeysLeft(t, c, p); len(left) > 0 {
		t.Fatalf("keys left: %v", left)
	}
}
