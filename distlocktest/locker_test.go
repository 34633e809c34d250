package distlocktest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distlock/distlock/distlocktest"
	"github.com/distlock/distlock/mutex"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const ttl = 10 * time.Second

// newLocker returns a Locker with TTL ttl on a new Clock at start, closed
// at cleanup.
func newLocker(t testing.TB, fifo bool) (*distlocktest.Locker, *distlocktest.Clock) {
	t.Helper()
	clock := distlocktest.NewClock(start)
	l, err := distlocktest.NewLocker(distlocktest.Options{Clock: clock, TTL: ttl, FIFO: fifo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, clock
}

// modes runs f for a Locker without and with FIFO.
func modes(t *testing.T, f func(t *testing.T, fifo bool)) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) { f(t, fifo) })
	}
}

func mustLock(t testing.TB, l mutex.Locker, keys ...string) mutex.Lease {
	t.Helper()
	lease, err := l.TryLock(t.Context(), keys...)
	if err != nil {
		t.Fatalf("TryLock(%q): %v", keys, err)
	}
	return lease
}

// result is the outcome of a Lock run by lockAsync.
type result struct {
	lease mutex.Lease
	err   error
}

// lockAsync runs l.Lock in a goroutine, waits until it is queued (or
// returned), and delivers its outcome.
func lockAsync(t testing.TB, ctx context.Context, l *distlocktest.Locker, keys ...string) <-chan result {
	t.Helper()
	n := l.Waiting()
	ch := make(chan result, 1)
	go func() {
		lease, err := l.Lock(ctx, keys...)
		ch <- result{lease, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for l.Waiting() == n && len(ch) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Lock neither waits nor returns")
		}
		time.Sleep(100 * time.Microsecond)
	}
	return ch
}

// await returns the outcome of a Lock started by lockAsync.
func await(t testing.TB, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Lock did not return")
	}
	return result{}
}

// pending fails the test if the Lock started by lockAsync has returned.
func pending(t testing.TB, ch <-chan result) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Lock returned %v, %v; want it waiting", r.lease, r.err)
	default:
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestNewLockerOptions(t *testing.T) {
	l, err := distlocktest.NewLocker(distlocktest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.TTL() != mutex.DefaultTTL || l.FIFO() || l.Clock() == nil || !l.Clock().Now().Equal(time.Unix(0, 0)) {
		t.Fatalf("defaults: TTL %v, FIFO %v, clock at %v", l.TTL(), l.FIFO(), l.Clock().Now())
	}
	l2, err := distlocktest.NewLocker(distlocktest.Options{TTL: 1500*time.Millisecond + time.Microsecond, FIFO: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if l2.TTL() != 1500*time.Millisecond || !l2.FIFO() {
		t.Fatalf("TTL %v, FIFO %v", l2.TTL(), l2.FIFO())
	}
	for _, tc := range []struct {
		ttl  time.Duration
		want string
	}{
		{-time.Second, "mutex: invalid argument: negative TTL -1s"},
		{time.Millisecond, "mutex: invalid argument: TTL 1ms shorter than 10ms"},
	} {
		_, err := distlocktest.NewLocker(distlocktest.Options{TTL: tc.ttl})
		if !errors.Is(err, mutex.ErrInvalid) || err.Error() != tc.want {
			t.Errorf("TTL %v: %v, want %q", tc.ttl, err, tc.want)
		}
	}
}

func TestInvalidKeys(t *testing.T) {
	l, _ := newLocker(t, false)
	ctx := t.Context()
	for _, tc := range []struct {
		keys []string
		want string
	}{
		{nil, "mutex: invalid argument: no keys"},
		{[]string{""}, "mutex: invalid argument: empty key"},
		{[]string{"a", "b", "a"}, `mutex: invalid argument: key "a" given twice`},
		{[]string{strings.Repeat("k", mutex.MaxKeyLen+1)}, "mutex: invalid argument: key of 513 bytes, longer than 512"},
		{make([]string, mutex.MaxKeys+1), "mutex: invalid argument: 257 keys, more than 256"},
	} {
		_, err := l.Lock(ctx, tc.keys...)
		if !errors.Is(err, mutex.ErrInvalid) || err.Error() != tc.want {
			t.Errorf("Lock: %v, want %q", err, tc.want)
		}
		_, err = l.TryLock(ctx, tc.keys...)
		if !errors.Is(err, mutex.ErrInvalid) || err.Error() != tc.want {
			t.Errorf("TryLock: %v, want %q", err, tc.want)
		}
		_, err = l.Check(ctx, tc.keys...)
		if !errors.Is(err, mutex.ErrInvalid) || err.Error() != tc.want {
			t.Errorf("Check: %v, want %q", err, tc.want)
		}
	}
	// The longest key is fine.
	mustLock(t, l, strings.Repeat("k", mutex.MaxKeyLen))
}

func TestTryLockContention(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		l, clock := newLocker(t, fifo)
		ctx := t.Context()
		a := mustLock(t, l, "a", "b")
		clock.Advance(3 * time.Second)
		_, err := l.TryLock(ctx, "c", "b")
		var nerr *mutex.NotObtainedError
		if !errors.As(err, &nerr) || !errors.Is(err, mutex.ErrNotObtained) {
			t.Fatalf("TryLock of a held key: %v", err)
		}
		if nerr.Key != "b" || nerr.RetryAfter != 7*time.Second || nerr.Cause != nil {
			t.Fatalf("NotObtainedError %+v, want key b, retry after 7s", *nerr)
		}
		if err.Error() != `mutex: not obtained: "b" is held` {
			t.Fatalf("error %q", err)
		}
		// All or nothing: the failed TryLock took no key.
		c := mustLock(t, l, "c")
		if st, err := l.Check(ctx, "a", "b"); err != nil || st != mutex.Locked {
			t.Fatalf("Check(a, b) = %v, %v", st, err)
		}
		if st, err := l.Check(ctx, "a", "d"); err != nil || st != mutex.PartiallyLocked {
			t.Fatalf("Check(a, d) = %v, %v", st, err)
		}
		if err := a.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if st, err := l.Check(ctx, "a", "b"); err != nil || st != mutex.Available {
			t.Fatalf("Check(a, b) after Unlock = %v, %v", st, err)
		}
		if err := c.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLeaseAccessors(t *testing.T) {
	l, _ := newLocker(t, false)
	a := mustLock(t, l, "b", "a")
	if got := a.Keys(); len(got) != 2 || got[0] != "b" || got[1] != "a" {
		t.Fatalf("Keys() = %q", got)
	}
	a.Keys()[0] = "x" // a copy
	if a.Keys()[0] != "b" {
		t.Fatal("Keys returns the lease's own slice")
	}
	if a.FenceOf("a") != a.Fence() || a.FenceOf("b") != a.Fence() || a.FenceOf("c") != 0 {
		t.Fatalf("FenceOf: %d %d %d, Fence %d", a.FenceOf("a"), a.FenceOf("b"), a.FenceOf("c"), a.Fence())
	}
	b := mustLock(t, l, "c")
	if a.Token() == "" || a.Token() == b.Token() {
		t.Fatalf("tokens %q and %q", a.Token(), b.Token())
	}
	if a.Err() != nil || closed(a.Done()) {
		t.Fatalf("new lease ended: %v", a.Err())
	}
}

func TestFencesIncrease(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		l, clock := newLocker(t, fifo)
		ctx := t.Context()
		last := map[string]int64{}
		check := func(lease mutex.Lease) {
			t.Helper()
			for _, k := range lease.Keys() {
				if f := lease.FenceOf(k); f <= last[k] {
					t.Fatalf("fence of %q: %d after %d", k, f, last[k])
				}
				last[k] = lease.FenceOf(k)
			}
		}
		for i := range 5 {
			lease := mustLock(t, l, "a", "b")
			check(lease)
			if i%2 == 0 {
				if err := lease.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
			} else {
				clock.Advance(ttl) // expiry, not release
			}
			check(mustLock(t, l, "b"))
			clock.Advance(ttl)
		}
	})
}

func TestExpiry(t *testing.T) {
	l, clock := newLocker(t, false)
	ctx := t.Context()
	a := mustLock(t, l, "a", "b")
	clock.Advance(ttl - time.Millisecond)
	if a.Err() != nil || closed(a.Done()) {
		t.Fatalf("lease ended before its deadline: %v", a.Err())
	}
	clock.Advance(time.Millisecond)
	if !closed(a.Done()) {
		t.Fatal("Done open after the deadline")
	}
	want := `mutex: lock not held: validity of the lease on ["a" "b"] ran out`
	if err := a.Err(); !errors.Is(err, mutex.ErrNotHeld) || err.Error() != want {
		t.Fatalf("Err() = %v, want %q", err, want)
	}
	if st, _ := l.Check(ctx, "a", "b"); st != mutex.Available {
		t.Fatalf("keys %v after expiry", st)
	}
	if err := a.Extend(ctx); !errors.Is(err, mutex.ErrNotHeld) || err.Error() != "extend: "+want {
		t.Fatalf("Extend after expiry: %v", err)
	}
	b := mustLock(t, l, "a")
	if err := a.Unlock(ctx); !errors.Is(err, mutex.ErrNotHeld) || err.Error() != "unlock: "+want {
		t.Fatalf("Unlock after expiry: %v", err)
	}
	if err := a.Unlock(ctx); !errors.Is(err, mutex.ErrReleased) {
		t.Fatalf("second Unlock: %v, want ErrReleased", err)
	}
	// The expired lease's Unlock left the new holder alone.
	if b.Err() != nil {
		t.Fatalf("new holder lost its lease: %v", b.Err())
	}
	if st, _ := l.Check(ctx, "a"); st != mutex.Locked {
		t.Fatalf("key %v, want locked by the new holder", st)
	}
}

func TestExtend(t *testing.T) {
	l, clock := newLocker(t, false)
	ctx := t.Context()
	a := mustLock(t, l, "a")
	clock.Advance(8 * time.Second)
	if err := a.Extend(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(8 * time.Second) // 16s after the grant, 8s after the Extend
	if a.Err() != nil {
		t.Fatalf("extended lease ended: %v", a.Err())
	}
	_, err := l.TryLock(ctx, "a")
	var nerr *mutex.NotObtainedError
	if !errors.As(err, &nerr) || nerr.RetryAfter != 2*time.Second {
		t.Fatalf("TryLock: %v, want held for 2s more", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Extend(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Extend with a cancelled context: %v", err)
	}
	clock.Advance(2 * time.Second)
	if !errors.Is(a.Err(), mutex.ErrNotHeld) {
		t.Fatalf("Err() = %v after the extended deadline", a.Err())
	}
}

func TestUnlock(t *testing.T) {
	l, _ := newLocker(t, false)
	ctx := t.Context()
	a := mustLock(t, l, "a")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Unlock(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Unlock with a cancelled context: %v", err)
	}
	if a.Err() != nil {
		t.Fatalf("a failed Unlock ended the lease: %v", a.Err())
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if !closed(a.Done()) || a.Err() != mutex.ErrReleased {
		t.Fatalf("after Unlock: Done closed %v, Err %v", closed(a.Done()), a.Err())
	}
	if err := a.Unlock(ctx); !errors.Is(err, mutex.ErrReleased) || err.Error() != "unlock: mutex: lease released" {
		t.Fatalf("second Unlock: %v", err)
	}
	if err := a.Extend(ctx); !errors.Is(err, mutex.ErrReleased) {
		t.Fatalf("Extend after Unlock: %v", err)
	}
}

func TestLockWaitsForUnlock(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		l, _ := newLocker(t, fifo)
		ctx := t.Context()
		a := mustLock(t, l, "a")
		ch := lockAsync(t, ctx, l, "a")
		pending(t, ch)
		if err := a.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		// Granted by the Unlock itself.
		if st, _ := l.Check(ctx, "a"); st != mutex.Locked || l.Waiting() != 0 {
			t.Fatalf("after Unlock: key %v, %d waiting", st, l.Waiting())
		}
		r := await(t, ch)
		if r.err != nil || r.lease.Fence() <= a.Fence() {
			t.Fatalf("Lock: %v, %v", r.lease, r.err)
		}
	})
}

func TestLockWaitsForExpiry(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		l, clock := newLocker(t, fifo)
		ctx := t.Context()
		a := mustLock(t, l, "a")
		ch := lockAsync(t, ctx, l, "a")
		clock.Advance(ttl - time.Nanosecond)
		pending(t, ch)
		clock.Advance(time.Nanosecond)
		r := await(t, ch)
		if r.err != nil || r.lease.Fence() <= a.Fence() {
			t.Fatalf("Lock: %v, %v", r.lease, r.err)
		}
		if !errors.Is(a.Err(), mutex.ErrNotHeld) {
			t.Fatalf("expired lease: %v", a.Err())
		}
	})
}

func TestLockContextEnds(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		l, clock := newLocker(t, fifo)
		a := mustLock(t, l, "a")
		clock.Advance(4 * time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		ch := lockAsync(t, ctx, l, "b", "a")
		cancel()
		r := await(t, ch)
		var nerr *mutex.NotObtainedError
		if !errors.As(r.err, &nerr) || !errors.Is(r.err, mutex.ErrNotObtained) || !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Lock ended by its context: %v", r.err)
		}
		if nerr.Key != "a" || nerr.RetryAfter != 6*time.Second {
			t.Fatalf("NotObtainedError %+v, want key a, retry after 6s", *nerr)
		}
		if l.Waiting() != 0 {
			t.Fatalf("%d waiting after the wait ended", l.Waiting())
		}
		// A context that ended before the call.
		if _, err := l.Lock(ctx, "c"); !errors.Is(err, mutex.ErrNotObtained) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock with an ended context: %v", err)
		}
		if _, err := l.TryLock(ctx, "c"); !errors.Is(err, context.Canceled) {
			t.Fatalf("TryLock with an ended context: %v", err)
		}
		if _, err := l.Check(ctx, "c"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Check with an ended context: %v", err)
		}
		if err := a.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLockDeadline(t *testing.T) {
	l, _ := newLocker(t, false)
	mustLock(t, l, "a")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := l.Lock(ctx, "a")
	if !errors.Is(err, mutex.ErrNotObtained) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock past its deadline: %v", err)
	}
}

// TestFreeKeyDoesNotWait: without FIFO, a waiter that one key blocks does
// not hold up others on its free keys.
func TestFreeKeyDoesNotWait(t *testing.T) {
	l, _ := newLocker(t, false)
	ctx := t.Context()
	b := mustLock(t, l, "b")
	ab := lockAsync(t, ctx, l, "a", "b")
	a := lockAsync(t, ctx, l, "a")
	ra := await(t, a)
	if ra.err != nil {
		t.Fatal(ra.err)
	}
	mustLock(t, l, "c") // and TryLock is not held up either
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	pending(t, ab) // "a" is held now
	if err := ra.lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if r := await(t, ab); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestFIFOOrder(t *testing.T) {
	l, clock := newLocker(t, true)
	ctx := t.Context()
	held := mustLock(t, l, "a")
	var chs []<-chan result
	for range 5 {
		chs = append(chs, lockAsync(t, ctx, l, "a"))
	}
	// TryLock does not jump the queue, even when the key is free.
	if _, err := l.TryLock(ctx, "a"); !errors.Is(err, mutex.ErrNotObtained) {
		t.Fatalf("TryLock past a queue: %v", err)
	}
	for i, ch := range chs {
		if i%2 == 0 {
			if err := held.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		} else {
			clock.Advance(ttl)
		}
		r := await(t, ch)
		if r.err != nil {
			t.Fatalf("waiter %d: %v", i, r.err)
		}
		for _, later := range chs[i+1:] {
			pending(t, later)
		}
		held = r.lease
	}
}

// TestFIFOMultiKey: a multi-key FIFO waiter keeps the keys it waits for
// from the waiters behind it, and is granted once all are free.
func TestFIFOMultiKey(t *testing.T) {
	l, _ := newLocker(t, true)
	ctx := t.Context()
	b := mustLock(t, l, "b")
	ab := lockAsync(t, ctx, l, "a", "b")
	a := lockAsync(t, ctx, l, "a")
	pending(t, a) // "a" is free but reserved for the earlier waiter
	if st, _ := l.Check(ctx, "a"); st != mutex.Locked {
		t.Fatalf("a key with waiters is %v, want locked", st)
	}
	_, err := l.TryLock(ctx, "a")
	var nerr *mutex.NotObtainedError
	if !errors.As(err, &nerr) || nerr.Key != "a" || nerr.RetryAfter != 0 {
		t.Fatalf("TryLock of a queued key: %v", err)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	rab := await(t, ab)
	if rab.err != nil {
		t.Fatal(rab.err)
	}
	pending(t, a)
	if err := rab.lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if r := await(t, a); r.err != nil {
		t.Fatal(r.err)
	}
}

// TestFIFOCancelledHead: a waiter that leaves the head of a queue lets the
// next one through.
func TestFIFOCancelledHead(t *testing.T) {
	l, _ := newLocker(t, true)
	ctx := t.Context()
	mustLock(t, l, "b")
	hctx, cancel := context.WithCancel(ctx)
	head := lockAsync(t, hctx, l, "a", "b")
	next := lockAsync(t, ctx, l, "a")
	pending(t, next)
	cancel()
	if r := await(t, head); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled head: %v", r.err)
	}
	if r := await(t, next); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestClose(t *testing.T) {
	l, clock := newLocker(t, false)
	ctx := t.Context()
	a := mustLock(t, l, "a")
	b := mustLock(t, l, "b")
	ch := lockAsync(t, ctx, l, "a")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if r := await(t, ch); r.err != mutex.ErrClosed {
		t.Fatalf("waiting Lock after Close: %v, want ErrClosed", r.err)
	}
	if _, err := l.Lock(ctx, "c"); err != mutex.ErrClosed {
		t.Fatalf("Lock after Close: %v", err)
	}
	if _, err := l.TryLock(ctx, "c"); err != mutex.ErrClosed {
		t.Fatalf("TryLock after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Granted leases live on.
	if err := a.Extend(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Check(ctx, "a", "b"); err != nil || st != mutex.Locked {
		t.Fatalf("Check after Close: %v, %v", st, err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(ttl)
	if !errors.Is(b.Err(), mutex.ErrNotHeld) {
		t.Fatalf("lease after its TTL, past Close: %v", b.Err())
	}
}

func TestReentrant(t *testing.T) {
	l, _ := newLocker(t, false)
	ctx := t.Context()
	err := mutex.WithLock(ctx, l, "a", func(ctx context.Context) error {
		if _, err := l.Lock(ctx, "b", "a"); !errors.Is(err, mutex.ErrReentrant) || err.Error() != `mutex: key already held by this context: "a"` {
			t.Errorf("nested Lock: %v", err)
		}
		if _, err := l.TryLock(ctx, "a"); !errors.Is(err, mutex.ErrReentrant) {
			t.Errorf("nested TryLock: %v", err)
		}
		// A nested WithLock joins the held lease.
		return mutex.WithLock(ctx, l, "a", func(context.Context) error { return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	// Behind a decorator, the innermost lease is found too.
	lease := mustLock(t, l, "c")
	dctx := mutex.ContextWithLease(ctx, otherLocker{}, wrapped{lease})
	if _, err := l.TryLock(dctx, "c"); !errors.Is(err, mutex.ErrReentrant) {
		t.Fatalf("TryLock under a decorated lease: %v", err)
	}
	if err := lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	// A lease that has ended holds nothing.
	if _, err := l.TryLock(dctx, "c"); err != nil {
		t.Fatalf("TryLock under an ended lease: %v", err)
	}
}

type wrapped struct{ mutex.Lease }

func (w wrapped) Unwrap() mutex.Lease { return w.Lease }

type otherLocker struct{ mutex.Locker }

// TestMutualExclusion runs many goroutines that lock overlapping keys and
// checks that no key ever has two holders.
func TestMutualExclusion(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		l, clock := newLocker(t, fifo)
		ctx := t.Context()
		keys := []string{"a", "b", "c"}
		var holders [3]atomic.Int32
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					set := []string{keys[(g+i)%3]}
					if (g+i)%2 == 0 {
						set = append(set, keys[(g+i+1)%3])
					}
					lease, err := l.Lock(ctx, set...)
					if err != nil {
						t.Error(err)
						return
					}
					for _, k := range set {
						if n := holders[k[0]-'a'].Add(1); n != 1 {
							t.Errorf("%d holders of %q", n, k)
						}
					}
					for _, k := range set {
						holders[k[0]-'a'].Add(-1)
					}
					if err := lease.Unlock(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		// The clock moves meanwhile; no lease lives for a whole TTL, so
		// none expires while held.
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for {
			select {
			case <-done:
				if l.Waiting() != 0 {
					t.Fatalf("%d waiting at the end", l.Waiting())
				}
				return
			case <-time.After(time.Millisecond):
				clock.Advance(time.Millisecond)
			}
		}
	})
}

func TestClockAdvance(t *testing.T) {
	clock := distlocktest.NewClock(start)
	clock.Advance(-time.Second)
	clock.Advance(0)
	if !clock.Now().Equal(start) {
		t.Fatalf("clock moved back to %v", clock.Now())
	}
	clock.Advance(time.Minute)
	if got := clock.Now(); !got.Equal(start.Add(time.Minute)) {
		t.Fatalf("Now() = %v", got)
	}
}

// TestSharedClock: one Clock drives the leases of two Lockers.
func TestSharedClock(t *testing.T) {
	clock := distlocktest.NewClock(start)
	var leases []mutex.Lease
	for _, d := range []time.Duration{time.Second, 2 * time.Second} {
		l, err := distlocktest.NewLocker(distlocktest.Options{Clock: clock, TTL: d})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		leases = append(leases, mustLock(t, l, "a"))
	}
	clock.Advance(time.Second)
	if !closed(leases[0].Done()) || closed(leases[1].Done()) {
		t.Fatal("after 1s: want the first lease ended, the second held")
	}
	clock.Advance(time.Second)
	if !closed(leases[1].Done()) {
		t.Fatal("after 2s: the second lease is still held")
	}
}

// TestLeaseRunsOut is the test of a lease that expires, as the README
// shows it.
func TestLeaseRunsOut(t *testing.T) {
	clock := distlocktest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	locker, err := distlocktest.NewLocker(distlocktest.Options{Clock: clock, TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()

	lease, err := locker.Lock(t.Context(), "invoice:42")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second) // the TTL runs out
	<-lease.Done()                  // closed by Advance
	if !errors.Is(lease.Err(), mutex.ErrNotHeld) {
		t.Fatalf("lease after its TTL: %v", lease.Err())
	}
}
