package semaphore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/locktest"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
	"github.com/distlock/distlock/semaphore"
)

func modes(t *testing.T, f func(t *testing.T, fifo bool)) {
	t.Run("plain", func(t *testing.T) { f(t, false) })
	t.Run("fifo", func(t *testing.T) { f(t, true) })
}

func TestNewInvalid(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never reached
	defer client.Close()
	var nilClient *redis.Client
	for _, tc := range []struct {
		name   string
		client redis.UniversalClient
		cfg    semaphore.Config
		want   string
	}{
		{"nil client", nil, semaphore.Config{Permits: 1}, "nil client"},
		{"typed nil client", nilClient, semaphore.Config{Permits: 1}, "nil client"},
		{"zero permits", client, semaphore.Config{}, "0 permits, want at least 1"},
		{"negative permits", client, semaphore.Config{Permits: -2}, "-2 permits"},
		{"negative TTL", client, semaphore.Config{Permits: 1, TTL: -time.Second}, "negative TTL"},
		{"short TTL", client, semaphore.Config{Permits: 1, TTL: time.Millisecond}, "shorter than"},
		{"brace in prefix", client, semaphore.Config{Permits: 1, Prefix: "a{b"}, "brace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := semaphore.New(tc.client, tc.cfg)
			if !errors.Is(err, mutex.ErrInvalid) || s != nil {
				t.Fatalf("New: %v, %v; want an error wrapping mutex.ErrInvalid", s, err)
			}
			if got := err.Error(); !strings.Contains(got, tc.want) || !strings.HasPrefix(got, "mutex: invalid argument: ") {
				t.Errorf("error %q does not say %q", got, tc.want)
			}
		})
	}
}

func TestBadKeysBeforeRedis(t *testing.T) {
	// Nothing listens on these addresses: any Redis call would fail with
	// a connection error, not ErrInvalid.
	for _, client := range []redis.UniversalClient{
		redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}),
		redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}}),
	} {
		defer client.Close()
		s := newSem(t, client, semaphore.Config{Permits: 2})
		ctx := t.Context()
		long := string(make([]byte, mutex.MaxKeyLen+1))
		for _, keys := range [][]string{nil, {""}, {"a", "a"}, {long}} {
			_, err := s.Lock(ctx, keys...)
			if !errors.Is(err, mutex.ErrInvalid) {
				t.Errorf("Lock(%q): %v, want ErrInvalid", keys, err)
			}
			_, err = s.TryLock(ctx, keys...)
			if !errors.Is(err, mutex.ErrInvalid) {
				t.Errorf("TryLock(%q): %v, want ErrInvalid", keys, err)
			}
			_, err = s.Check(ctx, keys...)
			if !errors.Is(err, mutex.ErrInvalid) {
				t.Errorf("Check(%q): %v, want ErrInvalid", keys, err)
			}
		}
		if _, ok := client.(*redis.ClusterClient); ok {
			_, err := s.TryLock(ctx, "a", "b") // slots 15495 and 3300
			if !errors.Is(err, mutex.ErrInvalid) {
				t.Errorf("TryLock of keys in two slots on a Cluster: %v, want ErrInvalid", err)
			}
		}
	}
}

func TestPermits(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, b redistest.Backend) {
		modes(t, func(t *testing.T, fifo bool) {
			c := b.Client(t)
			cfg := semaphore.Config{Prefix: prefix(t), Permits: 2, TTL: 5 * time.Second, FIFO: fifo}
			s := newSem(t, c, cfg)
			ctx := t.Context()

			st, err := s.Check(ctx, "k")
			if err != nil || st != mutex.Available {
				t.Fatalf("Check of a free key: %v, %v", st, err)
			}
			a, err := s.Lock(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			b2, err := s.TryLock(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if b2.Fence() <= a.Fence() {
				t.Errorf("fences %d then %d, want increasing", a.Fence(), b2.Fence())
			}
			st, _ = s.Check(ctx, "k", "other")
			if st != mutex.PartiallyLocked {
				t.Errorf("Check with k full: %v", st)
			}
			_, err = s.TryLock(ctx, "k")
			var noe *mutex.NotObtainedError
			if !errors.As(err, &noe) || noe.Key != "k" || noe.RetryAfter <= 0 || noe.RetryAfter > cfg.TTL {
				t.Fatalf("TryLock of a full key: %v, want a NotObtainedError for k with RetryAfter", err)
			}
			got := lockAsync(ctx, s, "k")
			select {
			case g := <-got:
				t.Fatalf("Lock of a full key returned %v", g.err)
			case <-time.After(50 * time.Millisecond):
			}
			if err := a.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if err := a.Unlock(ctx); !errors.Is(err, mutex.ErrReleased) {
				t.Errorf("second Unlock: %v, want ErrReleased", err)
			}
			g := <-got
			if g.err != nil {
				t.Fatal(g.err)
			}
			if g.lease.Fence() <= b2.Fence() {
				t.Errorf("fence %d after %d, want increasing", g.lease.Fence(), b2.Fence())
			}
			if err := b2.Extend(ctx); err != nil {
				t.Fatal(err)
			}
			for _, l := range []mutex.Lease{b2, g.lease} {
				if err := l.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
				if !errors.Is(l.Err(), mutex.ErrReleased) {
					t.Errorf("Err after Unlock: %v", l.Err())
				}
			}
			if left := keysLeft(t, c, cfg.Prefix); len(left) != 0 {
				t.Errorf("keys left after every release: %v", left)
			}
		})
	})
}

// TestExclusion runs many goroutines over several Semaphores, each with
// its own client, on one key and on a pair of keys, and has a referee
// count the holders of each key: never more than Permits, and Permits at
// some point.
func TestExclusion(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		srv := redistest.Shared(t)
		const permits = 3
		cfg := semaphore.Config{Prefix: prefix(t), Permits: permits, TTL: 5 * time.Second, FIFO: fifo}
		var sems []*semaphore.Semaphore
		for range 4 {
			sems = append(sems, newSem(t, srv.Client(t), cfg))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		refs := map[string]*locktest.Referee{"a": {}, "b": {}}
		sets := [][]string{{"a"}, {"a", "b"}, {"b"}, {"b", "a"}}
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				s, keys := sems[g%len(sems)], sets[g%len(sets)]
				for range 12 {
					l, err := s.Lock(ctx, keys...)
					if err != nil {
						t.Error(err)
						return
					}
					for _, k := range keys {
						if n := refs[k].Enter(); n > permits {
							t.Errorf("%d holders of %q, want at most %d", n, k, permits)
						}
					}
					time.Sleep(time.Millisecond)
					for _, k := range keys {
						refs[k].Leave()
					}
					if err := l.Unlock(ctx); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		for k, r := range refs {
			if r.Most() != permits {
				t.Errorf("at most %d holders of %q at once, want %d", r.Most(), k, permits)
			}
		}
		if left := keysLeft(t, srv.Client(t), cfg.Prefix); len(left) != 0 {
			t.Errorf("keys left: %v", left)
		}
	})
}

// TestFencesIncrease checks that every grant of a key gets a fence greater
// than those of the grants that happened before it, whoever made them.
func TestFencesIncrease(t *testing.T) {
	srv := redistest.Shared(t)
	cfg := semaphore.Config{Prefix: prefix(t), Permits: 4, TTL: 5 * time.Second}
	s1, s2 := newSem(t, srv.Client(t), cfg), newSem(t, srv.Client(t), cfg)
	ctx := t.Context()
	var mu sync.Mutex
	var last int64
	seen := make(map[int64]bool)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			s := s1
			if g%2 == 1 {
				s = s2
			}
			for range 25 {
				mu.Lock()
				before := last
				mu.Unlock()
				l, err := s.Lock(ctx, "k")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if l.Fence() <= before || seen[l.Fence()] {
					t.Errorf("fence %d, not above %d granted before, or repeated", l.Fence(), before)
				}
				seen[l.Fence()] = true
				last = max(last, l.Fence())
				mu.Unlock()
				if err := l.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func TestFIFOOrder(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	cfg := semaphore.Config{Prefix: prefix(t), Permits: 2, TTL: 5 * time.Second, FIFO: true}
	var sems []*semaphore.Semaphore
	for range 3 {
		sems = append(sems, newSem(t, srv.Client(t), cfg))
	}
	ctx := t.Context()
	a := must(t)(sems[0].Lock(ctx, "k"))
	b := must(t)(sems[1].Lock(ctx, "k"))
	var waits []<-chan grant
	for i := range 6 {
		waits = append(waits, lockAsync(ctx, sems[i%3], "k"))
		waitQueueLen(t, c, cfg.Prefix, "k", int64(i+1))
	}
	// A TryLock does not jump the queue, even when a permit is free.
	_, err := sems[2].TryLock(ctx, "k")
	if !errors.Is(err, mutex.ErrNotObtained) {
		t.Fatalf("TryLock past a queue: %v", err)
	}
	held := []mutex.Lease{a, b}
	for i, w := range waits {
		if err := held[0].Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		held = held[1:]
		g := <-w
		if g.err != nil {
			t.Fatal(g.err)
		}
		// Nobody queued after it was granted before it.
		for _, later := range waits[i+1:] {
			select {
			case g2 := <-later:
				t.Fatalf("waiter %d overtook waiter %d (%v)", len(waits)-len(waits[i+1:]), i, g2.err)
			default:
			}
		}
		held = append(held, g.lease)
	}
	for _, l := range held {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if left := keysLeft(t, c, cfg.Prefix); len(left) != 0 {
		t.Errorf("keys left: %v", left)
	}
}

func TestCancelledWaiterLeaves(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		srv := redistest.Shared(t)
		c := srv.Client(t)
		cfg := semaphore.Config{Prefix: prefix(t), Permits: 1, TTL: 5 * time.Second, FIFO: fifo}
		s, other := newSem(t, c, cfg), newSem(t, srv.Client(t), cfg)
		ctx := t.Context()
		held := must(t)(s.Lock(ctx, "k"))
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := other.Lock(wctx, "k")
		if !errors.Is(err, mutex.ErrNotObtained) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock until a deadline: %v", err)
		}
		if fifo && queueLen(t, c, cfg.Prefix, "k") != 0 {
			t.Error("the cancelled waiter is still queued")
		}
		if err := held.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		// The key is free at once: nobody is left in its way.
		l := must(t)(other.TryLock(ctx, "k"))
		_ = l.Unlock(ctx)
		if left := keysLeft(t, c, cfg.Prefix); len(left) != 0 {
			t.Errorf("keys left: %v", left)
		}
	})
}

// TestOneAttemptPerRelease checks that a release does not wake every
// waiter: waiters of one Semaphore take turns (plain), or only the head of
// the queue is woken (FIFO). It counts the scripts Redis ran per grant.
func TestOneAttemptPerRelease(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		srv := redistest.Start(t) // own server: its command counts are ours
		c := srv.Client(t)
		cfg := semaphore.Config{Prefix: prefix(t), Permits: 1, TTL: 10 * time.Second, FIFO: fifo}
		s := newSem(t, c, cfg)
		ctx := t.Context()
		held := must(t)(s.Lock(ctx, "k"))
		const waiters = 20
		var waits []<-chan grant
		for i := range waiters {
			waits = append(waits, lockAsync(ctx, s, "k"))
			if fifo {
				waitQueueLen(t, c, cfg.Prefix, "k", int64(i+1))
			}
		}
		time.Sleep(100 * time.Millisecond) // every waiter waits
		if err := redistest.ResetStats(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := held.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		for range waiters {
			var g grant
			select {
			case g = <-waits[0]:
				waits = waits[1:]
			default:
				// Plain mode does not keep the order: take whoever is done.
				g = firstOf(t, &waits)
			}
			if g.err != nil {
				t.Fatal(g.err)
			}
			if err := g.lease.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		}
		stats, err := redistest.CommandStats(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		scripts := stats["evalsha"] + stats["eval"]
		// Per grant: the release and one attempt; FIFO renewals add a
		// few; a herd would cost a multiple of the waiters.
		t.Logf("%d scripts for %d grants", scripts, waiters)
		if limit := int64(2*waiters + waiters/2); scripts > limit {
			t.Errorf("%d scripts for %d grants, want at most %d", scripts, waiters, limit)
		}
	})
}

func firstOf(t *testing.T, waits *[]<-chan grant) grant {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		for i, w := range *waits {
			select {
			case g := <-w:
				*waits = append((*waits)[:i], (*waits)[i+1:]...)
				return g
			default:
			}
		}
		select {
		case <-deadline:
			t.Fatal("no waiter was granted")
		case <-time.After(time.Millisecond):
		}
	}
}

func TestMiddleware(t *testing.T) {
	srv := redistest.Shared(t)
	s := newSem(t, srv.Client(t), semaphore.Config{Prefix: prefix(t), Permits: 2, TTL: 300 * time.Millisecond})
	locker := middleware.Chain(s, middleware.Retry(), middleware.AutoExtend())
	ctx := t.Context()
	l := must(t)(locker.Lock(ctx, "k"))
	time.Sleep(time.Second) // three TTLs: renewed in the background
	if err := l.Err(); err != nil {
		t.Fatalf("auto-extended lease ended: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	ran := false
	err := mutex.WithLock(ctx, locker, "k", func(ctx context.Context) error {
		ran = true
		st, err := s.Check(ctx, "k")
		if err != nil || st != mutex.Available {
			return fmt.Errorf("one of two permits held: %v, %v", st, err)
		}
		return nil
	})
	if err != nil || !ran {
		t.Fatal(err)
	}
}

// TestLostLease checks that a lease whose permit expired reports it, and
// that its Extend and Unlock say so.
func TestLostLease(t *testing.T) {
	srv := redistest.Shared(t)
	s := newSem(t, srv.Client(t), semaphore.Config{Prefix: prefix(t), Permits: 1, TTL: 50 * time.Millisecond})
	ctx := t.Context()
	l := must(t)(s.Lock(ctx, "k"))
	<-l.Done()
	if !errors.Is(l.Err(), mutex.ErrNotHeld) {
		t.Fatalf("Err: %v", l.Err())
	}
	if err := l.Extend(ctx); !errors.Is(err, mutex.ErrNotHeld) {
		t.Errorf("Extend: %v", err)
	}
	next := must(t)(s.Lock(ctx, "k"))
	if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrNotHeld) {
		t.Errorf("Unlock of a lost lease: %v", err)
	}
	if err := next.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestChildHolder holds every permit of a key in a child process until it
// is killed (see TestCrashedHolder).
func TestChildHolder(t *testing.T) {
	if !locktest.IsChild(t.Name()) {
		return
	}
	client, err := redisurl.Open(os.Getenv("SEM_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	s, err := semaphore.New(client, semaphore.Config{Prefix: os.Getenv("SEM_PREFIX"), Permits: 2, TTL: 600 * time.Millisecond, FIFO: os.Getenv("SEM_FIFO") == "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 {
		l, err := s.Lock(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		locktest.Report("held %d", l.Fence())
	}
	select {} // until killed
}

// TestCrashedHolder kills a process holding every permit: its permits
// come back when their TTL runs out, and waiters take them then.
func TestCrashedHolder(t *testing.T) {
	modes(t, func(t *testing.T, fifo bool) {
		srv := redistest.Shared(t)
		c := srv.Client(t)
		const ttl = 600 * time.Millisecond
		cfg := semaphore.Config{Prefix: prefix(t), Permits: 2, TTL: ttl, FIFO: fifo}
		s := newSem(t, c, cfg)
		fifoEnv := "0"
		if fifo {
			fifoEnv = "1"
		}
		child := locktest.StartChild(t, "TestChildHolder", "SEM_URL="+srv.URL(), "SEM_PREFIX="+cfg.Prefix, "SEM_FIFO="+fifoEnv)
		var first, second int64
		fmt.Sscanf(child.Line(t, 10*time.Second), "held %d", &first)
		fmt.Sscanf(child.Line(t, 10*time.Second), "held %d", &second)
		ctx := t.Context()
		w1, w2 := lockAsync(ctx, s, "k"), lockAsync(ctx, s, "k")
		time.Sleep(50 * time.Millisecond)
		child.Kill(t)
		var fences []int64
		for _, w := range []<-chan grant{w1, w2} {
			g := <-w
			if g.err != nil {
				t.Fatal(g.err)
			}
			fences = append(fences, g.lease.Fence())
			defer g.lease.Unlock(ctx)
		}
		// Fences are the server's clock in microseconds at each grant.
		slices.Sort(fences)
		for i, crashed := range []int64{first, second} {
			after := time.Duration(fences[i]-crashed) * time.Microsecond
			t.Logf("permit back %v after the crashed holder's grant (TTL %v)", after, ttl)
			if after < ttl || after > ttl+500*time.Millisecond {
				t.Errorf("permit back %v after the crashed holder's grant, want the TTL %v or a little more", after, ttl)
			}
		}
	})
}

func must(t testing.TB) func(mutex.Lease, error) mutex.Lease {
	return func(l mutex.Lease, err error) mutex.Lease {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
}
