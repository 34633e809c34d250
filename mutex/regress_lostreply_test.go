package mutex_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// warmUp runs one contended Lock of keys by m, held first by holder, so that
// every script of the grant and release paths is loaded in Redis and m's
// client has a connection.
func warmUp(t *testing.T, m, holder *mutex.Mutex, keys ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	h := must[mutex.Lease](t)(holder.Lock(ctx, keys...))
	got := lockAsync(ctx, m, keys...)
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, h.Unlock(ctx))
	g := <-got
	require.NoError(t, g.err)
	require.NoError(t, g.lease.Unlock(ctx))
}

// When go-redis re-sends an acquire whose reply was lost (the default
// client retries), the re-run must not leave the caller waiting behind its
// own grant: Lock returns a lease long before the TTL runs out.
func TestLockAfterLostAcquireReplyReturnsPromptly(t *testing.T) {
	cases := []struct {
		name string
		fifo bool
		keys []string
		// contended makes the dropped reply that of the claim of a FIFO
		// waiter woken by a release, rather than that of the first attempt.
		contended bool
	}{
		{"plain/single", false, []string{"k"}, false},
		{"plain/multi", false, []string{"a", "b"}, false},
		{"fifo/single", true, []string{"k"}, false},
		{"fifo/multi", true, []string{"a", "b"}, false},
		{"fifo/multi-claim", true, []string{"a", "b"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			p := newFaultProxy(t, srv.Addr())
			cfg := mutex.Config{Prefix: prefix(t), TTL: 20 * time.Second, FIFO: tc.fifo}
			m := newMutexOn(t, p.client(t), cfg)
			other := newMutex(t, srv, cfg)
			warmUp(t, m, other, "w1", "w2")

			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			lockKeys := make([]string, len(tc.keys))
			for i, k := range tc.keys {
				lockKeys[i] = lockKey(cfg.Prefix, k)
			}
			var held mutex.Lease
			if tc.contended {
				held = must[mutex.Lease](t)(other.Lock(ctx, tc.keys[0]))
			}
			start := time.Now()
			var rule *faultRule
			if !tc.contended {
				rule = p.arm(dropReply, scriptOn(lockKeys...))
			}
			got := lockAsync(ctx, m, tc.keys...)
			if tc.contended {
				direct := srv.Client(t)
				require.Eventually(t, func() bool {
					n, err := direct.ZCard(ctx, fifoQueueKey(cfg.Prefix, tc.keys[0])).Result()
					return err == nil && n == 1
				}, 3*time.Second, time.Millisecond, "the waiter never queued")
				rule = p.arm(dropReply, scriptOn(lockKeys...))
				require.NoError(t, held.Unlock(ctx))
			}
			g := <-got
			defer unlockIfHeld(g)
			select {
			case <-rule.Answered():
			default:
				t.Fatal("no acquire of the keys ran with its reply dropped")
			}
			require.NoError(t, g.err, "Lock returned after %v, with a TTL of %v", g.at.Sub(start), cfg.TTL)
			assert.NoError(t, g.lease.Err())
		})
	}
}

// A release whose reply was lost and that go-redis sent again finds
// nothing left to release: the Unlock still succeeded, and says so.
func TestUnlockAfterLostReleaseReplyReturnsNil(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			p := newFaultProxy(t, srv.Addr())
			cfg := mutex.Config{Prefix: prefix(t), TTL: 20 * time.Second, FIFO: fifo}
			m := newMutexOn(t, p.client(t), cfg)
			other := newMutex(t, srv, cfg)
			warmUp(t, m, other, "w")
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()

			t.Run("Unlock", func(t *testing.T) {
				l := must[mutex.Lease](t)(m.Lock(ctx, "k"))
				rule := p.arm(dropReply, scriptOn(lockKey(cfg.Prefix, "k")))
				err := l.Unlock(ctx)
				require.True(t, isClosed(rule.Answered()), "the release's reply was not dropped")
				assert.NoError(t, err)
				assert.ErrorIs(t, l.Err(), mutex.ErrReleased)
				assert.Equal(t, mutex.Available, must[mutex.Status](t)(other.Check(ctx, "k")))
			})
			t.Run("WithLock", func(t *testing.T) {
				var rule *faultRule
				err := mutex.WithLock(ctx, m, "k2", func(context.Context) error {
					rule = p.arm(dropReply, scriptOn(lockKey(cfg.Prefix, "k2")))
					return nil
				})
				require.NotNil(t, rule)
				require.True(t, isClosed(rule.Answered()), "the release's reply was not dropped")
				assert.NoError(t, err)
				assert.Equal(t, mutex.Available, must[mutex.Status](t)(other.Check(ctx, "k2")))
			})
		})
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
