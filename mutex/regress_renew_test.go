package mutex_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// Extensions of RunLocked leases on a Redis that does not answer (with
// go-redis defaults, each blocks for the read timeout), as many as the
// process-wide Renewer has workers, do not keep a lease on a healthy Redis
// from being extended: its function runs on, uncancelled.
func TestRenewerServesOtherRedisWhileOneHangs(t *testing.T) {
	srv := redistest.Shared(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	ca := redis.NewClient(&redis.Options{Addr: proxy.Addr()}) // default options
	t.Cleanup(func() { ca.Close() })
	ma, err := mutex.New(ca, mutex.Config{Prefix: prefix(t) + ":a", TTL: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { ma.Close() })
	mb := newMutex(t, srv, mutex.Config{Prefix: prefix(t) + ":b", TTL: time.Second})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < mutex.DefaultRenewerWorkers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = mutex.WithLock(context.Background(), ma, fmt.Sprint("a", i), func(ctx context.Context) error {
				select {
				case <-ctx.Done():
				case <-stop:
				}
				return nil
			})
		}()
		time.Sleep(40 * time.Millisecond) // separate batches
	}
	lostB := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = mutex.WithLock(context.Background(), mb, "b", func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				lostB <- context.Cause(ctx)
			case <-stop:
			}
			return nil
		})
	}()
	time.Sleep(200 * time.Millisecond)
	proxy.Pause() // Redis A stops answering; B is fine
	defer func() {
		proxy.Resume()
		close(stop)
		wg.Wait()
	}()
	select {
	case err := <-lostB:
		t.Errorf("lease on healthy Redis B lost while only Redis A hangs: %v", err)
	case <-time.After(4 * time.Second):
	}
}

// blockingLease is a lease (no deadline known) whose Extend blocks for a
// while, e.g. a decorator retrying, or a client without context deadlines.
type blockingLease struct {
	done chan struct{}
	hit  chan struct{}
	once sync.Once
}

func (b *blockingLease) Keys() []string       { return []string{"x"} }
func (b *blockingLease) Token() string        { return "t" }
func (b *blockingLease) Fence() int64         { return 1 }
func (b *blockingLease) FenceOf(string) int64 { return 1 }
func (b *blockingLease) Extend(ctx context.Context) error {
	b.once.Do(func() { close(b.hit) })
	time.Sleep(2 * time.Second)
	return nil
}
func (b *blockingLease) Unlock(context.Context) error { return nil }
func (b *blockingLease) Done() <-chan struct{}        { return b.done }
func (b *blockingLease) Err() error                   { return nil }

// With one worker, a lease whose Extend takes 2s (a decorator that retries,
// or a client that ignores context deadlines) does not keep a Mutex lease
// with a TTL of 600ms from being extended.
func TestRenewerOneWorkerIsNotHeldUpBySlowExtend(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{Prefix: prefix(t), TTL: 600 * time.Millisecond})
		r, err := mutex.NewRenewer(mutex.RenewerConfig{Workers: 1})
		require.NoError(t, err)
		defer r.Close()
		b := &blockingLease{done: make(chan struct{}), hit: make(chan struct{})}
		rb, err := r.Renew(b, mutex.RenewPolicy{Interval: 10 * time.Millisecond})
		require.NoError(t, err)
		defer rb.Stop()
		<-b.hit
		l, err := m.TryLock(t.Context(), "k")
		require.NoError(t, err)
		rl, err := r.Renew(l, mutex.RenewPolicy{})
		require.NoError(t, err)
		defer rl.Stop()
		time.Sleep(1200 * time.Millisecond)
		require.NoError(t, l.Err(), "healthy lease lapsed behind a slow Extend of another lease")
	})
}
