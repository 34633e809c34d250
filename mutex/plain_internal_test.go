package mutex

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// newPlainPair returns a plain Mutex on c, whose local queues a test looks
// into, and another Mutex on the same keys; both are closed at cleanup.
func newPlainPair(t *testing.T, c *redis.Client, pfx string) (m1, m2 *Mutex, p *plain) {
	t.Helper()
	cfg := Config{Prefix: pfx, TTL: 30 * time.Second}
	m1, err := New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m1.Close() })
	m2, err = New(redistest.Shared(t).Client(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Close() })
	return m1, m2, m1.mode.(*plain)
}

// waiterIn returns a function that finds the i-th waiter of the queue of a
// Redis key, or nil.
func waiterIn(m *Mutex, p *plain) func(key string, i int) *waiter {
	return func(key string, i int) *waiter {
		m.mu.Lock()
		defer m.mu.Unlock()
		if q := p.queues[key]; q != nil && len(q.waiters) > i {
			return q.waiters[i]
		}
		return nil
	}
}

// stateOf returns a function that reads the key a waiter is blocked on and
// whether it missed a release.
func stateOf(m *Mutex) func(w *waiter) (string, bool) {
	return func(w *waiter) (string, bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return w.blocked, w.missed
	}
}

// missedBehind sets up, on m1, Y (b,c) ahead of X (a,b) in queue b: X is
// blocked on a, and a's release arrives while Y claims b, so X.missed is
// set. m2 holds b again (lb2); a and c are free. yc and xc report the ends
// of Y's and X's Lock (Y unlocks at once if granted); start is when X
// began to wait.
type missedBehind struct {
	Y      *waiter
	lb2    Lease
	yc, xc chan error
	start  time.Time
	field  func(w *waiter) (string, bool)
	rc     string
	m2     *Mutex
}

func newMissedBehind(t *testing.T) *missedBehind {
	t.Helper()
	srv := redistest.Shared(t)
	ctx := context.Background()
	pfx := "iv:" + t.Name()
	m1, m2, p := newPlainPair(t, srv.Client(t), pfx)
	ra, rb, rc := m1.redisKey("a"), m1.redisKey("b"), m1.redisKey("c")
	waiterOf, field := waiterIn(m1, p), stateOf(m1)
	la := must(m2.TryLock(ctx, "a"))
	lb := must(m2.TryLock(ctx, "b"))
	lc := must(m2.TryLock(ctx, "c"))

	yc := make(chan error, 1)
	go func() {
		l, err := m1.Lock(ctx, "b", "c")
		if err == nil {
			err = l.Unlock(ctx)
		}
		yc <- err
	}()
	waitFor(t, "Y queued", func() bool { w := waiterOf(rb, 0); return w != nil })
	Y := waiterOf(rb, 0)
	waitFor(t, "Y blocked on b", func() bool { b, _ := field(Y); return b == rb })

	xctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	t.Cleanup(cancel)
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
	return &missedBehind{Y: Y, lb2: lb2, yc: yc, xc: xc, start: start, field: field, rc: rc, m2: m2}
}

// Y then blocks on c and stops claiming b: X, which does not claim b, must
// be told to try, not sleep until a's old TTL.
func TestWaiterWokenWhenAheadStopsClaimingItsKey(t *testing.T) {
	ctx := context.Background()
	s := newMissedBehind(t)
	lc2 := must(s.m2.TryLock(ctx, "c"))
	defer lc2.Unlock(ctx)
	must2(t, s.lb2.Unlock(ctx)) // Y tries: b free, c held -> Y.blocked=c; nobody wakes X
	waitFor(t, "Y blocked on c again", func() bool { b, _ := s.field(s.Y); return b == s.rc })
	t.Logf("a and b are free now (%v)", time.Since(s.start))
	if err := <-s.xc; err != nil {
		t.Fatalf("X (a,b) not woken although a and b have been free: %v", err)
	}
}

// Y then takes b and c, leaves the queues and releases them: X, which does
// not claim b, must still be told to try, not sleep until a's old TTL.
func TestWaiterWokenWhenAheadAcquires(t *testing.T) {
	ctx := context.Background()
	s := newMissedBehind(t)
	must2(t, s.lb2.Unlock(ctx)) // Y takes b and c, and releases them
	if err := <-s.yc; err != nil {
		t.Fatal(err)
	}
	t.Logf("a and b are free now (%v)", time.Since(s.start))
	if err := <-s.xc; err != nil {
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
	s := m.sub.(*subscriber)
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

// holdReply holds back the reply of the next script call once armed, until
// gate is closed; the call itself has run.
type holdReply struct {
	armed   atomic.Bool
	holding chan struct{} // closed when a reply is held back
	gate    chan struct{}
}

func (h *holdReply) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "evalsha" && h.armed.CompareAndSwap(true, false) {
			close(h.holding)
			<-h.gate
		}
		return err
	}
}

func (h *holdReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// H (a,b) waits for b; X (a,b) queues behind it. b is released and H
// tries: a is held then, and while the reply is on its way a is released.
// The announcement goes to X, which may not try while H claims b, and H,
// learning only then that a was held, must still try again rather than
// sleep until a's old TTL.
func TestReleaseDuringAttemptIsNotLost(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	pfx := "iv:" + t.Name()
	hook := &holdReply{holding: make(chan struct{}), gate: make(chan struct{})}
	c := srv.Client(t)
	c.AddHook(hook)
	m1, m2, p := newPlainPair(t, c, pfx)
	rb := m1.redisKey("b")
	waiterOf, field := waiterIn(m1, p), stateOf(m1)
	lb := must(m2.TryLock(ctx, "b"))

	hctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	hc := make(chan error, 1)
	go func() {
		l, err := m1.Lock(hctx, "a", "b")
		if l != nil {
			defer l.Unlock(ctx)
		}
		hc <- err
	}()
	waitFor(t, "H queued", func() bool { return waiterOf(rb, 0) != nil })
	H := waiterOf(rb, 0)
	waitFor(t, "H blocked on b", func() bool { b, _ := field(H); return b == rb })
	time.Sleep(200 * time.Millisecond) // H's attempt once subscribed is done

	xc := make(chan error, 1)
	go func() {
		l, err := m1.Lock(hctx, "a", "b")
		if l != nil {
			defer l.Unlock(ctx)
		}
		xc <- err
	}()
	waitFor(t, "X queued", func() bool { return waiterOf(rb, 1) != nil })
	X := waiterOf(rb, 1)
	time.Sleep(200 * time.Millisecond) // X is subscribed and may not try
	ra := m1.redisKey("a")
	releasesOfA := func() uint64 {
		m1.mu.Lock()
		defer m1.mu.Unlock()
		return p.queues[ra].releases
	}
	la := must(m2.TryLock(ctx, "a"))
	hook.armed.Store(true)
	must2(t, lb.Unlock(ctx)) // H tries: a held; its reply is held back
	<-hook.holding
	before := releasesOfA()
	must2(t, la.Unlock(ctx)) // announced while H claims b: to X, which may not try
	waitFor(t, "a's release announced", func() bool { return releasesOfA() > before })
	if _, missed := field(X); !missed {
		t.Fatal("X was not told of a's release")
	}
	close(hook.gate)
	if err := <-hc; err != nil {
		t.Fatalf("H (a,b) not woken although a and b have been free: %v", err)
	}
	if err := <-xc; err != nil {
		t.Fatalf("X (a,b): %v", err)
	}
}

// Y (a,c) heads the queue of a and claims it; X (a) waits behind it for a.
// a's release goes to Y, whose attempt then finds c held: Y stops claiming
// a, and X, which claims a, must be told that a was released.
func TestReleaseToAheadWaiterThatMovesOnReachesNext(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	pfx := "iv:" + t.Name()
	m1, m2, p := newPlainPair(t, srv.Client(t), pfx)
	ra, rc := m1.redisKey("a"), m1.redisKey("c")
	waiterOf, field := waiterIn(m1, p), stateOf(m1)
	lc := must(m2.TryLock(ctx, "c"))

	yc := make(chan error, 1)
	go func() {
		l, err := m1.Lock(ctx, "a", "c")
		if err == nil {
			err = l.Unlock(ctx)
		}
		yc <- err
	}()
	waitFor(t, "Y queued", func() bool { return waiterOf(ra, 0) != nil })
	Y := waiterOf(ra, 0)
	waitFor(t, "Y blocked on c", func() bool { b, _ := field(Y); return b == rc })
	time.Sleep(200 * time.Millisecond) // Y's attempt once subscribed is done

	la := must(m2.TryLock(ctx, "a"))
	xctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	xc := make(chan error, 1)
	go func() {
		l, err := m1.Lock(xctx, "a")
		if l != nil {
			defer l.Unlock(ctx)
		}
		xc <- err
	}()
	waitFor(t, "X queued", func() bool { return waiterOf(ra, 1) != nil })
	X := waiterOf(ra, 1)
	waitFor(t, "X blocked on a", func() bool { b, m := field(X); return b == ra && !m })

	must2(t, lc.Unlock(ctx)) // Y tries: a held -> Y.blocked=a, ahead of X
	waitFor(t, "Y blocked on a", func() bool { b, _ := field(Y); return b == ra })
	lc2 := must(m2.TryLock(ctx, "c"))
	must2(t, la.Unlock(ctx)) // to Y, which tries: c held -> Y.blocked=c
	waitFor(t, "Y blocked on c again", func() bool { b, _ := field(Y); return b == rc })
	if err := <-xc; err != nil {
		t.Fatalf("X (a) not woken although a has been free: %v", err)
	}
	must2(t, lc2.Unlock(ctx))
	if err := <-yc; err != nil {
		t.Fatal(err)
	}
}
