package mutex

import (
	"context"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/redistest"
)

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// X (a,b) is blocked on a; Y (b,c) ahead of X in queue b claims b. a's
// release arrives while Y claims b: X.missed is set. Y then blocks on c and
// stops claiming b, but kickLocked only looks at first claimers of Y's
// queues, and X does not claim b: X sleeps until a's old TTL.
func TestWaiterWokenWhenAheadStopsClaimingItsKey(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	pfx := "iv:" + t.Name()
	m1, _ := New(srv.Client(t), Config{Prefix: pfx, TTL: 30 * time.Second})
	m2, _ := New(srv.Client(t), Config{Prefix: pfx, TTL: 30 * time.Second})
	defer m1.Close()
	defer m2.Close()
	p := m1.mode.(*plain)
	ra, rb, rc := m1.redisKey("a"), m1.redisKey("b"), m1.redisKey("c")
	waiterOf := func(key string, i int) *waiter {
		m1.mu.Lock()
		defer m1.mu.Unlock()
		if q := p.queues[key]; q != nil && len(q.waiters) > i {
			return q.waiters[i]
		}
		return nil
	}
	field := func(w *waiter) (string, bool) {
		m1.mu.Lock()
		defer m1.mu.Unlock()
		return w.blocked, w.missed
	}
	la := must(m2.TryLock(ctx, "a"))
	lb := must(m2.TryLock(ctx, "b"))
	lc := must(m2.TryLock(ctx, "c"))

	yc := make(chan error, 1)
	go func() { _, err := m1.Lock(ctx, "b", "c"); yc <- err }()
	waitFor(t, "Y queued", func() bool { w := waiterOf(rb, 0); return w != nil })
	Y := waiterOf(rb, 0)
	waitFor(t, "Y blocked on b", func() bool { b, _ := field(Y); return b == rb })

	xctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	xc := make(chan error, 1)
	start := time.Now()
	go func() {
		l, err := m1.Lock(xctx, "a", "b")
		if l != nil {
			defer l.Unlock(ctx)
		}
		xc <- err
	}()
	waitFor(t, "X queued", func() bool { return waiterOf(rb, 1) != nil })
	X := waiterOf(rb, 1)

	must2(t, lb.Unlock(ctx)) // Y tries: c held -> Y.blocked=c; X kicked: a held -> X.blocked=a
	waitFor(t, "Y blocked on c", func() bool { b, _ := field(Y); return b == rc })
	waitFor(t, "X blocked on a", func() bool { b, _ := field(X); return b == ra })

	lb2 := must(m2.TryLock(ctx, "b"))
	must2(t, lc.Unlock(ctx)) // Y tries: b held -> Y.blocked=b (claims b again)
	waitFor(t, "Y blocked on b again", func() bool { b, _ := field(Y); return b == rb })

	must2(t, la.Unlock(ctx)) // a free; X may not try (Y claims b): X.missed
	waitFor(t, "X missed", func() bool { _, m := field(X); return m })

	lc2 := must(m2.TryLock(ctx, "c"))
	defer lc2.Unlock(ctx)
	must2(t, lb2.Unlock(ctx)) // Y tries: b free, c held -> Y.blocked=c; nobody wakes X
	waitFor(t, "Y blocked on c again", func() bool { b, _ := field(Y); return b == rc })
	t.Logf("a and b are free now (%v)", time.Since(start))
	if err := <-xc; err != nil {
		t.Fatalf("X (a,b) not woken although a and b have been free: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func must2(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A subscribe confirmation read while an UNSUBSCRIBE of the channel awaits
// its own answers an older SUBSCRIBE: it does not confirm a newer request,
// whose confirmation comes after the UNSUBSCRIBE's.
func TestStaleSubscribeConfirmationIsIgnored(t *testing.T) {
	srv := redistest.Shared(t)
	m, err := New(srv.Client(t), Config{Prefix: "iv:" + t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := m.mode.(*plain)
	const ch = "iv:stale"
	q := &keyQueue{key: ch, ready: make(chan struct{})}
	m.mu.Lock()
	p.queues[ch] = q
	m.subscribeLocked("iv:other") // starts the subscriber
	s := m.sub
	// A request for ch, not written, so that only the test confirms it.
	s.want[ch], s.pending[ch] = true, true
	m.mu.Unlock()
	// Stand in for the confirmations of an older SUBSCRIBE and of the
	// UNSUBSCRIBE written after it.
	s.countUnsubscribes([]string{ch}, 1)
	s.confirmed(ch)
	select {
	case <-q.ready:
		t.Fatal("a confirmation read before the UNSUBSCRIBE's confirmed the new request")
	default:
	}
	s.countUnsubscribes([]string{ch}, -1)
	s.confirmed(ch)
	select {
	case <-q.ready:
	default:
		t.Fatal("the confirmation after the UNSUBSCRIBE's did not confirm the request")
	}
	m.mu.Lock()
	delete(p.queues, ch)
	m.unsubscribeLocked(ch, "iv:other")
	m.mu.Unlock()
}
