package mutex_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// Err reports the end of a lease as soon as its deadline has passed, even
// when the timer that ends it has not run yet.
func TestLeaseErrIsSetOncePastDeadline(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		// One P, kept busy below, leaves timers to run only when the
		// scheduler preempts the busy goroutine.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		for _, fifo := range []bool{false, true} {
			for _, cc := range retryConfigs {
				t.Run(fmt.Sprintf("fifo=%v/%s", fifo, cc.Name), func(t *testing.T) {
					cfg := mutex.Config{Prefix: prefix(t), TTL: 100 * time.Millisecond, FIFO: fifo}
					m := newMutexOn(t, backend.Client(t, cc.UniversalMod), cfg)
					const leases = 20
					stale := 0
					for i := range leases {
						l := must[mutex.Lease](t)(m.Lock(t.Context(), fmt.Sprint("k", i)))
						deadline, ok := mutex.Deadline(l)
						require.True(t, ok)
						var now time.Time
						for now = time.Now(); !now.After(deadline); now = time.Now() {
						}
						if err := l.Err(); err == nil {
							stale++
						} else {
							assert.ErrorIs(t, err, mutex.ErrNotHeld)
						}
						_ = l.Unlock(context.Background())
					}
					assert.Zero(t, stale, "Err was nil past the deadline for %d of %d leases", stale, leases)
				})
			}
		}
	})
}

// A Lock or TryLock whose reply comes only after the validity of the lease
// it would make has passed does not return that lease: a returned lease
// always has its deadline ahead.
func TestLeaseGrantedAfterItsValidityIsNotReturned(t *testing.T) {
	ops := []struct {
		name string
		call func(*mutex.Mutex, context.Context, ...string) (mutex.Lease, error)
	}{
		{"Lock", (*mutex.Mutex).Lock},
		{"TryLock", (*mutex.Mutex).TryLock},
	}
	for _, fifo := range []bool{false, true} {
		for _, cc := range retryConfigs {
			for _, op := range ops {
				t.Run(fmt.Sprintf("fifo=%v/%s/%s", fifo, cc.Name, op.name), func(t *testing.T) {
					t.Parallel()
					srv := redistest.Start(t)
					cfg := mutex.Config{Prefix: prefix(t), TTL: 100 * time.Millisecond, FIFO: fifo}
					m := newMutexOn(t, srv.Client(t, cc.Mod), cfg)
					warm := must[mutex.Lease](t)(m.TryLock(t.Context(), "w"))
					require.NoError(t, warm.Unlock(t.Context()))

					srv.Pause(t)
					type result struct {
						lease mutex.Lease
						err   error
						at    time.Time
					}
					done := make(chan result, 1)
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						l, err := op.call(m, ctx, "k")
						done <- result{l, err, time.Now()}
					}()
					time.Sleep(300 * time.Millisecond)
					srv.Resume(t)
					r := <-done
					if r.lease == nil {
						return
					}
					defer r.lease.Unlock(context.Background())
					deadline, ok := mutex.Deadline(r.lease)
					require.True(t, ok)
					assert.True(t, deadline.After(r.at), "the lease returned was valid until %v before it was returned",
						r.at.Sub(deadline))
				})
			}
		}
	}
}
