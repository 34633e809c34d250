package mutex_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// Close may run while FIFO waiters are being cancelled and leave their
// queues: run with -race, which reports Close waiting for background work
// that is still being added.
func TestCloseWhileFIFOWaitersAreCancelled(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		for _, cc := range retryConfigs {
			t.Run(cc.Name, func(t *testing.T) {
				cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: true}
				holder := backendMutex(t, backend, cfg)
				held := must[mutex.Lease](t)(holder.Lock(t.Context(), "k"))
				defer held.Unlock(context.Background())

				const rounds, waiters = 40, 20
				for round := range rounds {
					m, err := mutex.New(backend.Client(t, cc.UniversalMod), cfg)
					require.NoError(t, err)
					var wg sync.WaitGroup
					for range waiters {
						ctx, cancel := context.WithCancel(t.Context())
						wg.Go(func() {
							defer cancel()
							if l, _ := m.Lock(ctx, "k"); l != nil {
								_ = l.Unlock(context.Background())
							}
						})
						wg.Go(func() {
							time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
							cancel()
						})
					}
					time.Sleep(time.Duration(20+rand.IntN(30)) * time.Millisecond)
					closed := make(chan error, 1)
					go func() { closed <- m.Close() }()
					wg.Wait()
					select {
					case err := <-closed:
						assert.NoError(t, err, fmt.Sprintf("round %d: Close", round))
					case <-time.After(10 * time.Second):
						t.Fatalf("round %d: Close did not return", round)
					}
				}
			})
		}
	})
}

// A FIFO waiter whose Lock is cancelled leaves its queue even when Close
// follows at once: Close lets the leave in flight finish. Otherwise the
// queue keeps the dead entry, and a release may hand the lock to it, which
// holds up the next waiter for FIFOLiveness.
func TestCancelledFIFOWaiterLeavesBeforeClose(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: true}
		holder := backendMutex(t, backend, cfg)
		held := must[mutex.Lease](t)(holder.Lock(t.Context(), "k"))
		defer held.Unlock(context.Background())
		c := backend.Client(t)
		queue := cfg.Prefix + ":{k}:q"

		for round := range 20 {
			m, err := mutex.New(backend.Client(t), cfg)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = m.Lock(ctx, "k")
			}()
			require.Eventually(t, func() bool { return c.ZCard(t.Context(), queue).Val() == 1 },
				5*time.Second, time.Millisecond, "round %d: the waiter never queued", round)
			cancel()
			<-done
			require.NoError(t, m.Close())
			require.Zero(t, c.ZCard(t.Context(), queue).Val(), "round %d: the cancelled waiter is still queued after Close", round)
		}
	})
}
