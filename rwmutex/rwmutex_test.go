package rwmutex_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/locktest"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
	"github.com/distlock/distlock/rwmutex"
)

func prefix(t testing.TB) string {
	return "t:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}

func newRW(t testing.TB, client redis.UniversalClient, cfg rwmutex.Config) *rwmutex.RWMutex {
	t.Helper()
	rw, err := rwmutex.New(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rw.Close() })
	return rw
}

type grant struct {
	lease mutex.Lease
	err   error
}

func lockAsync(ctx context.Context, l mutex.Locker, keys ...string) <-chan grant {
	ch := make(chan grant, 1)
	go func() {
		lease, err := l.Lock(ctx, keys...)
		ch <- grant{lease, err}
	}()
	return ch
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

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func keysLeft(t testing.TB, c redis.UniversalClient, p string) []string {
	t.Helper()
	keys, err := redistest.Keys(context.Background(), c, p+"*")
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func waitQueueLen(t testing.TB, c redis.UniversalClient, p, key string, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := c.ZCard(context.Background(), p+":{"+key+"}:q").Result()
		if err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue of %q has %d waiters, want %d", key, got, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pending fails t if g delivers within a little while.
func pending(t testing.TB, g <-chan grant, what string) {
	t.Helper()
	select {
	case x := <-g:
		t.Fatalf("%s returned (%v) while it should wait", what, x.err)
	case <-time.After(30 * time.Millisecond):
	}
}

func TestNewInvalid(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer client.Close()
	var nilClient *redis.Client
	for _, tc := range []struct {
		client redis.UniversalClient
		cfg    rwmutex.Config
		want   string
	}{
		{nil, rwmutex.Config{}, "nil client"},
		{nilClient, rwmutex.Config{}, "nil client"},
		{client, rwmutex.Config{TTL: -1}, "negative TTL"},
		{client, rwmutex.Config{TTL: time.Microsecond}, "shorter than"},
		{client, rwmutex.Config{Prefix: "}"}, "brace"},
	} {
		rw, err := rwmutex.New(tc.client, tc.cfg)
		if !errors.Is(err, mutex.ErrInvalid) || rw != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%v): %v, want an error wrapping ErrInvalid that says %q", tc.cfg, err, tc.want)
		}
	}
	rw := newRW(t, client, rwmutex.Config{})
	for _, l := range []mutex.Locker{rw.Reader(), rw.Writer()} {
		if _, err := l.Lock(t.Context()); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("Lock without keys: %v", err)
		}
		if _, err := l.TryLock(t.Context(), "a", "a"); !errors.Is(err, mutex.ErrInvalid) {
			t.Errorf("TryLock of a key twice: %v", err)
		}
	}
}

func TestReadersShareWritersExclude(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, b redistest.Backend) {
		c := b.Client(t)
		cfg := rwmutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
		rw1, rw2 := newRW(t, c, cfg), newRW(t, b.Client(t), cfg)
		ctx := t.Context()

		r1 := must(t)(rw1.Reader().Lock(ctx, "k"))
		r2 := must(t)(rw2.Reader().TryLock(ctx, "k"))
		if st, _ := rw1.Writer().Check(ctx, "k"); st != mutex.Locked {
			t.Errorf("writer Check with readers: %v", st)
		}
		if st, _ := rw1.Reader().Check(ctx, "k"); st != mutex.Available {
			t.Errorf("reader Check with readers: %v", st)
		}
		if _, err := rw2.Writer().TryLock(ctx, "k"); !errors.Is(err, mutex.ErrNotObtained) {
			t.Fatalf("writer TryLock with readers: %v", err)
		}
		w := lockAsync(ctx, rw2.Writer(), "k")
		waitQueueLen(t, c, cfg.Prefix, "k", 1)
		pending(t, w, "writer Lock with readers")
		// A waiting writer keeps new readers out.
		if _, err := rw1.Reader().TryLock(ctx, "k"); !errors.Is(err, mutex.ErrNotObtained) {
			t.Fatalf("reader TryLock with a writer waiting: %v", err)
		}
		late := lockAsync(ctx, rw1.Reader(), "k")
		waitQueueLen(t, c, cfg.Prefix, "k", 2)
		pending(t, late, "reader Lock with a writer waiting")

		noErr(t, r1.Unlock(ctx))
		pending(t, w, "writer Lock with one reader")
		noErr(t, r2.Unlock(ctx))
		wg := <-w
		if wg.err != nil {
			t.Fatal(wg.err)
		}
		if wg.lease.Fence() <= r2.Fence() {
			t.Errorf("writer fence %d not above reader fence %d", wg.lease.Fence(), r2.Fence())
		}
		pending(t, late, "reader Lock with a writer holding")
		noErr(t, wg.lease.Unlock(ctx))
		lg := <-late
		if lg.err != nil {
			t.Fatal(lg.err)
		}
		if lg.lease.Fence() <= wg.lease.Fence() {
			t.Errorf("reader fence %d not above writer fence %d", lg.lease.Fence(), wg.lease.Fence())
		}
		noErr(t, lg.lease.Unlock(ctx))
		if left := keysLeft(t, c, cfg.Prefix); len(left) != 0 {
			t.Errorf("keys left: %v", left)
		}
	})
}

// TestExclusion has readers and writers of several RWMutexes, each on its
// own client, take one key and a pair of keys, and a referee check that a
// writer is never with anyone, and that readers did share.
func TestExclusion(t *testing.T) {
	srv := redistest.Shared(t)
	cfg := rwmutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
	var rws []*rwmutex.RWMutex
	for range 3 {
		rws = append(rws, newRW(t, srv.Client(t), cfg))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	type referee struct{ readers, writers, mostReaders atomic.Int64 }
	refs := map[string]*referee{"a": {}, "b": {}}
	sets := [][]string{{"a"}, {"a", "b"}, {"b"}, {"b", "a"}}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			rw, keys := rws[g%len(rws)], sets[g%len(sets)]
			writer := g%4 == 0 || g%4 == 1 && g%8 == 1
			l := rw.Reader()
			if writer {
				l = rw.Writer()
			}
			for range 10 {
				lease, err := l.Lock(ctx, keys...)
				if err != nil {
					t.Error(err)
					return
				}
				for _, k := range keys {
					r := refs[k]
					if writer {
						if r.writers.Add(1) != 1 || r.readers.Load() != 0 {
							t.Errorf("writer of %q with others", k)
						}
					} else {
						n := r.readers.Add(1)
						if r.writers.Load() != 0 {
							t.Errorf("reader of %q with a writer", k)
						}
						if n > r.mostReaders.Load() {
							r.mostReaders.Store(n)
						}
					}
				}
				time.Sleep(2 * time.Millisecond)
				for _, k := range keys {
					if writer {
						refs[k].writers.Add(-1)
					} else {
						refs[k].readers.Add(-1)
					}
				}
				if err := lease.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for k, r := range refs {
		if r.mostReaders.Load() < 2 {
			t.Errorf("readers of %q never shared it", k)
		}
	}
	if left := keysLeft(t, srv.Client(t), cfg.Prefix); len(left) != 0 {
		t.Errorf("keys left: %v", left)
	}
}

// TestNoWriterStarvation keeps readers overlapping on a key without pause;
// a writer still gets it soon, and the readers that came after the writer
// go after it.
func TestNoWriterStarvation(t *testing.T) {
	srv := redistest.Shared(t)
	cfg := rwmutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}
	readers, writer := newRW(t, srv.Client(t), cfg), newRW(t, srv.Client(t), cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var writing atomic.Bool
	var afterWriter atomic.Int64 // reader grants after the writer's
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for ctx.Err() == nil {
				l, err := readers.Reader().Lock(ctx, "k")
				if err != nil {
					return
				}
				if writing.Load() {
					t.Error("a reader holds the key with the writer")
				}
				if w := writerFence.Load(); w != 0 && l.Fence() > w {
					afterWriter.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
				_ = l.Unlock(context.WithoutCancel(ctx))
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // the readers overlap
	start := time.Now()
	w := must(t)(writer.Writer().Lock(ctx, "k"))
	waited := time.Since(start)
	writing.Store(true)
	writerFence.Store(w.Fence())
	time.Sleep(20 * time.Millisecond)
	writing.Store(false)
	noErr(t, w.Unlock(ctx))
	t.Logf("writer waited %v for readers that never paused", waited)
	if waited > time.Second {
		t.Errorf("writer waited %v", waited)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	wg.Wait()
	if afterWriter.Load() == 0 {
		t.Error("no reader went after the writer")
	}
}

var writerFence atomic.Int64

// TestChildHolder holds a key as a reader or a writer in a child process
// until it is killed (see TestCrashedHolder).
func TestChildHolder(t *testing.T) {
	if !locktest.IsChild(t.Name()) {
		return
	}
	client, err := redisurl.Open(os.Getenv("RW_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rw, err := rwmutex.New(client, rwmutex.Config{Prefix: os.Getenv("RW_PREFIX"), TTL: 600 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	l := rw.Reader()
	if os.Getenv("RW_KIND") == "writer" {
		l = rw.Writer()
	}
	lease, err := l.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	locktest.Report("held %d", lease.Fence())
	select {} // until killed
}

// TestCrashedHolder kills a process holding a key as a reader (then as a
// writer): it blocks the other side no longer than its TTL.
func TestCrashedHolder(t *testing.T) {
	for _, kind := range []string{"reader", "writer"} {
		t.Run(kind, func(t *testing.T) {
			srv := redistest.Shared(t)
			const ttl = 600 * time.Millisecond
			cfg := rwmutex.Config{Prefix: prefix(t), TTL: ttl}
			rw := newRW(t, srv.Client(t), cfg)
			child := locktest.StartChild(t, "TestChildHolder", "RW_URL="+srv.URL(), "RW_PREFIX="+cfg.Prefix, "RW_KIND="+kind)
			var crashed int64
			fmt.Sscanf(child.Line(t, 10*time.Second), "held %d", &crashed)
			other := rw.Writer()
			if kind == "writer" {
				other = rw.Reader()
			}
			got := lockAsync(t.Context(), other, "k")
			time.Sleep(50 * time.Millisecond)
			child.Kill(t)
			g := <-got
			if g.err != nil {
				t.Fatal(g.err)
			}
			defer g.lease.Unlock(t.Context())
			after := time.Duration(g.lease.Fence()-crashed) * time.Microsecond
			t.Logf("granted %v after the crashed %s's grant (TTL %v)", after, kind, ttl)
			if after < ttl || after > ttl+500*time.Millisecond {
				t.Errorf("granted %v after the crashed %s's grant, want the TTL %v or a little more", after, kind, ttl)
			}
		})
	}
}

func TestMiddleware(t *testing.T) {
	srv := redistest.Shared(t)
	rw := newRW(t, srv.Client(t), rwmutex.Config{Prefix: prefix(t), TTL: 300 * time.Millisecond})
	readers := middleware.Chain(rw.Reader(), middleware.Retry(), middleware.AutoExtend())
	ctx := t.Context()
	l := must(t)(readers.Lock(ctx, "k"))
	time.Sleep(time.Second)
	if err := l.Err(); err != nil {
		t.Fatalf("auto-extended reader lease ended: %v", err)
	}
	err := mutex.WithLock(ctx, readers, "k", func(ctx context.Context) error {
		st, err := rw.Writer().Check(ctx, "k")
		if err != nil || st != mutex.Locked {
			return fmt.Errorf("writer Check under two readers: %v, %v", st, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	noErr(t, l.Unlock(ctx))
}
