package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// tryLockWithin reports whether m's TryLock of key succeeds within d; the
// lease it gets is unlocked.
func tryLockWithin(t *testing.T, m *mutex.Mutex, key string, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		l, err := m.TryLock(ctx, key)
		if err == nil {
			_ = l.Unlock(ctx)
			cancel()
			return true
		}
		cancel()
		if time.Now().After(deadline) {
			t.Logf("last TryLock: %v", err)
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An acquire whose outcome is unknown because Redis could not be reached,
// and that Redis runs only after the call and its background clean-up
// gave up on it (as when Redis itself stalls longer than that), does not
// keep its key held until the TTL runs out once Redis can be reached again.
func TestAcquireRunAfterLongOutageIsReleased(t *testing.T) {
	for _, cc := range retryConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			p := newFaultProxy(t, srv.Addr())
			cfg := mutex.Config{Prefix: prefix(t), TTL: 3 * time.Second}
			m := newMutexOn(t, p.client(t, cc.Mod), cfg)
			other := newMutex(t, srv, cfg)
			warm := must[mutex.Lease](t)(m.TryLock(t.Context(), "w"))
			require.NoError(t, warm.Unlock(t.Context()))

			stalled := p.arm(holdBack, scriptOn(lockKey(cfg.Prefix, "k")))
			defer stalled.Cut()
			results := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
				defer cancel()
				l, err := m.TryLock(ctx, "k")
				if l != nil {
					_ = l.Unlock(context.Background())
				}
				results <- err
			}()
			select {
			case <-stalled.Hit():
			case <-time.After(5 * time.Second):
				t.Fatal("the acquire was not held back")
			}
			p.setDown(true)
			require.Error(t, <-results)
			// Redis stays out of reach until well after anything started
			// for the failed call gave up (min(TTL, 5s)).
			time.Sleep(cfg.TTL + 500*time.Millisecond)
			// Then the stalled acquire runs, first, as it would when a
			// paused Redis resumes.
			stalled.Release()
			select {
			case <-stalled.Answered():
			case <-time.After(5 * time.Second):
				t.Fatal("the stalled acquire never ran")
			}
			p.setDown(false)
			ran := time.Now()
			assert.True(t, tryLockWithin(t, other, "k", time.Second),
				"the key was still held %v after the stalled acquire ran, with a TTL of %v", time.Since(ran), cfg.TTL)
		})
	}
}

// An acquire whose reply timed out and that reaches Redis only after the
// background release of its token does not hold its key for the TTL.
func TestLateAcquireAfterBackgroundReleaseIsReleased(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		for _, cc := range retryConfigs {
			t.Run(fmt.Sprintf("fifo=%v/%s", fifo, cc.Name), func(t *testing.T) {
				t.Parallel()
				srv := redistest.Start(t)
				p := newFaultProxy(t, srv.Addr())
				cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: fifo}
				m := newMutexOn(t, p.client(t, cc.Mod), cfg)
				other := newMutex(t, srv, cfg)
				warm := must[mutex.Lease](t)(m.TryLock(t.Context(), "w"))
				require.NoError(t, warm.Unlock(t.Context()))

				late := p.arm(holdBack, scriptOn(lockKey(cfg.Prefix, "k")))
				defer late.Cut()
				ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
				l, err := m.TryLock(ctx, "k")
				cancel()
				if l != nil {
					_ = l.Unlock(context.Background())
				}
				require.Error(t, err)
				require.True(t, isClosed(late.Hit()), "the acquire was not held back")
				// Let the background release of the unknown outcome run
				// before the acquire reaches Redis.
				time.Sleep(time.Second)
				late.Release()
				select {
				case <-late.Answered():
				case <-time.After(5 * time.Second):
					t.Fatal("the late acquire never ran")
				}
				ran := time.Now()
				assert.True(t, tryLockWithin(t, other, "k", 2*time.Second),
					"the key was still held %v after the late acquire ran, with a TTL of %v", time.Since(ran), cfg.TTL)
			})
		}
	}
}

// An acquire that was never written to Redis (its connection could not be
// dialled) has no unknown outcome: nothing is released or revoked for it
// once Redis can be reached again.
func TestAcquireNeverSentLeavesNothing(t *testing.T) {
	for _, cc := range retryConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			srv := redistest.Shared(t)
			cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second}
			down := new(atomic.Bool)
			down.Store(true)
			c := srv.Client(t, cc.Mod, func(o *redis.Options) {
				o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
					if down.Load() {
						return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("injected refusal")}
					}
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				}
			})
			m := newMutexOn(t, c, cfg)
			_, err := m.TryLock(t.Context(), "k")
			require.Error(t, err)
			down.Store(false)
			// A background release, had one started, retries within this.
			time.Sleep(500 * time.Millisecond)
			assert.Empty(t, keysLeft(t, srv.Client(t), cfg.Prefix))
			l := must[mutex.Lease](t)(m.TryLock(t.Context(), "k"))
			require.NoError(t, l.Unlock(t.Context()))
		})
	}
}
