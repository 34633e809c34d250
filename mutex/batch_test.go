package mutex_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// pipelineCounter counts the script calls that a client sends on their own
// and in pipelines.
type pipelineCounter struct {
	single, pipelines, piped atomic.Int64
}

func (h *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" {
			h.single.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		h.piped.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// Concurrent calls of one Mutex beyond the requests it has in flight go
// out together, in pipelines, and every one of them gets its own answer.
func TestConcurrentCallsAreBatched(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			srv := redistest.Shared(t)
			c := srv.Client(t)
			hooks := new(pipelineCounter)
			c.AddHook(hooks)
			m := newMutexOn(t, c, mutex.Config{Prefix: prefix(t), FIFO: fifo})
			mutex.SetMaxInFlight(m, 1)
			const goroutines, rounds = 32, 20
			var wg sync.WaitGroup
			var fences sync.Map
			for g := range goroutines {
				wg.Go(func() {
					key := fmt.Sprint("k", g)
					var last int64
					for range rounds {
						l, err := m.Lock(t.Context(), key)
						if !assert.NoError(t, err) {
							return
						}
						assert.Greater(t, l.Fence(), last)
						last = l.Fence()
						if !assert.NoError(t, l.Extend(t.Context())) || !assert.NoError(t, l.Unlock(t.Context())) {
							return
						}
					}
					fences.Store(key, last)
				})
			}
			wg.Wait()
			calls := 3 * goroutines * rounds
			t.Logf("%d script calls: %d alone, %d in %d pipelines", calls, hooks.single.Load(), hooks.piped.Load(), hooks.pipelines.Load())
			assert.Positive(t, hooks.pipelines.Load())
			assert.Less(t, hooks.single.Load()+hooks.pipelines.Load(), int64(calls), "no fewer requests than calls")
			assert.Empty(t, keysLeft(t, c, prefix(t)))
		})
	}
}

// Calls waiting for a batch while the request in flight stalls return when
// their contexts end, and are never sent: their keys stay free.
func TestBatchedCallsGiveUpWhileWaiting(t *testing.T) {
	srv := redistest.Start(t)
	p := newFaultProxy(t, srv.Addr())
	cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second}
	m := newMutexOn(t, p.client(t, redistest.ContextTimeouts.Mod), cfg)
	mutex.SetMaxInFlight(m, 1)
	other := newMutex(t, srv, cfg)
	warm := must[mutex.Lease](t)(m.TryLock(t.Context(), "w"))
	require.NoError(t, warm.Unlock(t.Context()))

	stalled := p.arm(holdBack, scriptOn(lockKey(cfg.Prefix, "a")))
	defer stalled.Cut()
	first := make(chan struct{})
	go func() {
		defer close(first)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if l, err := m.TryLock(ctx, "a"); err == nil {
			_ = l.Unlock(ctx)
		}
	}()
	<-stalled.Hit()
	const waiting = 5
	var wg sync.WaitGroup
	for i := range waiting {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := m.Lock(ctx, fmt.Sprint("b", i))
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Less(t, time.Since(start), 2*time.Second, "a waiting call outlived its context")
		})
	}
	wg.Wait()
	stalled.Cut()
	<-first
	for i := range waiting {
		l, err := other.TryLock(t.Context(), fmt.Sprint("b", i))
		require.NoError(t, err, "a call that gave up before it was sent took its key")
		require.NoError(t, l.Unlock(t.Context()))
	}
}

// Calls whose batch was sent, and stalls, return when their contexts end;
// when the batch runs after that, the keys it took are released: no key
// stays held by a call that gave up.
func TestBatchedCallsGiveUpInFlight(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			srv := redistest.Start(t)
			p := newFaultProxy(t, srv.Addr())
			cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: fifo}
			m := newMutexOn(t, p.client(t, redistest.ContextTimeouts.Mod), cfg)
			mutex.SetMaxInFlight(m, 1)
			other := newMutex(t, srv, cfg)
			warm := must[mutex.Lease](t)(m.TryLock(t.Context(), "w"))
			require.NoError(t, warm.Unlock(t.Context()))

			// The first call stalls until its context ends; the calls that
			// collected meanwhile go out in one batch, which stalls too.
			first := p.arm(holdBack, scriptOn(lockKey(cfg.Prefix, "a")))
			defer first.Cut()
			batch := p.arm(holdBack, scriptOn(lockKey(cfg.Prefix, "b0")))
			defer batch.Cut()
			firstErr := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
				defer cancel()
				_, err := m.TryLock(ctx, "a")
				firstErr <- err
			}()
			<-first.Hit()
			const waiting = 5
			var wg sync.WaitGroup
			for i := range waiting {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(t.Context(), time.Second)
					defer cancel()
					start := time.Now()
					// The context's error, or the batch's timeout, which
					// ends with the last of its callers' deadlines.
					_, err := m.TryLock(ctx, fmt.Sprint("b", i))
					assert.Error(t, err)
					assert.Less(t, time.Since(start), 3*time.Second, "a batched call outlived its context")
				})
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case <-batch.Hit():
			case <-time.After(5 * time.Second):
				t.Fatal("the batch was not sent")
			}
			wg.Wait()
			require.Error(t, <-firstErr)
			// The batch runs now, after its callers gave up.
			batch.Release()
			select {
			case <-batch.Answered():
			case <-time.After(5 * time.Second):
				t.Fatal("the stalled batch never ran")
			}
			for i := range waiting {
				assert.True(t, tryLockWithin(t, other, fmt.Sprint("b", i), 3*time.Second),
					"a key taken by a batch whose caller gave up stayed held")
			}
		})
	}
}

// Batched calls keep exclusion while connections are cut under them: many
// goroutines of one Mutex, every call batched, contend for a few keys while
// the proxy cuts every connection again and again; no key is ever held by
// two valid leases, and every call ends.
func TestBatchedCallsUnderConnectionCuts(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		for _, cc := range retryConfigs {
			t.Run(fmt.Sprintf("fifo=%v/%s", fifo, cc.Name), func(t *testing.T) { batchedUnderCuts(t, fifo, cc.Mod) })
		}
	}
}

func batchedUnderCuts(t *testing.T, fifo bool, mod func(*redis.Options)) {
	srv := redistest.Start(t)
	p := newFaultProxy(t, srv.Addr())
	cfg := mutex.Config{Prefix: prefix(t), TTL: 2 * time.Second, FIFO: fifo}
	m := newMutexOn(t, p.client(t, redistest.ContextTimeouts.Mod, mod), cfg)
	mutex.SetMaxInFlight(m, 1)

	const keys, goroutines = 3, 24
	var (
		mu       sync.Mutex
		holders  [keys]mutex.Lease
		overlaps []string
		grants   atomic.Int64
		failures atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (g + i) % keys
				ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
				l, err := m.Lock(ctx, fmt.Sprint("k", k))
				if err != nil {
					cancel()
					failures.Add(1)
					continue
				}
				grants.Add(1)
				mu.Lock()
				if h := holders[k]; h != nil && h.Err() == nil {
					overlaps = append(overlaps, fmt.Sprintf("k%d: fence %d granted while fence %d was held", k, l.Fence(), h.Fence()))
				}
				holders[k] = l
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				if holders[k] == l {
					holders[k] = nil
				}
				mu.Unlock()
				_ = l.Unlock(ctx)
				cancel()
			}
		})
	}
	for range 40 {
		time.Sleep(50 * time.Millisecond)
		p.cutAll()
	}
	close(stop)
	wg.Wait()
	t.Logf("%d grants, %d failed calls", grants.Load(), failures.Load())
	assert.Empty(t, overlaps)
	assert.Positive(t, grants.Load())
}

// A Lock that waits behind another waiter of its Mutex, and so makes no
// attempt of its own, still says which key kept it waiting when its
// context ends.
func TestQueuedWaiterNamesTheHeldKey(t *testing.T) {
	srv := redistest.Shared(t)
	cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second}
	holder, m := newMutex(t, srv, cfg), newMutex(t, srv, cfg)
	held := must[mutex.Lease](t)(holder.Lock(t.Context(), "k"))
	defer held.Unlock(context.Background())

	first := lockAsync(t.Context(), m, "k")
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := m.Lock(ctx, "k")
	var nerr *mutex.NotObtainedError
	require.ErrorAs(t, err, &nerr)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "k", nerr.Key)
	assert.Positive(t, nerr.RetryAfter)
	require.NoError(t, held.Unlock(t.Context()))
	g := <-first
	require.NoError(t, g.err)
	require.NoError(t, g.lease.Unlock(t.Context()))
}
