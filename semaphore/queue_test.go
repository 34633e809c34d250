package semaphore_test

import (
	"context"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/semaphore"
)

// A FIFO waiter on keys a and b whose entry on b is dropped (its process
// stalled past mutex.FIFOLiveness and another request on b pruned it)
// rejoins under a new token and takes its old entry on a out first, so
// that the old entry does not head a's queue and block everyone on a, the
// waiter itself included, for another FIFOLiveness.
func TestLostMultiKeyWaiterLeavesNoEntryBehind(t *testing.T) {
	srv := redistest.Shared(t)
	direct := srv.Client(t)
	proxied, proxy := redistest.ProxiedClient(t, srv)
	cfg := semaphore.Config{Prefix: prefix(t), Permits: 1, TTL: 10 * time.Second, FIFO: true}
	holder := newSem(t, direct, cfg)
	other := newSem(t, direct, cfg)
	waiter := newSem(t, proxied, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	hb, err := holder.TryLock(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	ch := lockAsync(ctx, waiter, "a", "b")
	waitQueueLen(t, direct, cfg.Prefix, "a", 1)
	waitQueueLen(t, direct, cfg.Prefix, "b", 1)

	proxy.Pause()
	time.Sleep(mutex.FIFOLiveness + 300*time.Millisecond)
	// A request on b prunes the waiter's stale entry there; nobody
	// touches a.
	if _, err := other.TryLock(ctx, "b"); err == nil {
		t.Fatal("TryLock of b granted")
	}
	if n := queueLen(t, direct, cfg.Prefix, "b"); n != 0 {
		t.Fatalf("b's queue has %d entries", n)
	}
	proxy.Resume()
	// The waiter finds its entry lost and joins again.
	waitQueueLen(t, direct, cfg.Prefix, "b", 1)
	time.Sleep(100 * time.Millisecond)
	t.Logf("queue of a: %v", direct.ZRange(ctx, cfg.Prefix+":{a}:q", 0, -1).Val())
	if n := queueLen(t, direct, cfg.Prefix, "a"); n != 1 {
		t.Errorf("a's queue has %d entries, want 1 (the waiter's current token)", n)
	}
	released := time.Now()
	if err := hb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	g := <-ch
	if g.err != nil {
		t.Fatal(g.err)
	}
	defer g.lease.Unlock(context.Background())
	if d := g.at.Sub(released); d > 500*time.Millisecond {
		t.Errorf("waiter got a and b %v after b was released, nothing held a", d)
	}
}
