package mutex_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// The renewal of a FIFO queue keeps ten thousand waiters of one Mutex on
// one key queued, so that a TryLock from elsewhere cannot jump them when
// the holder releases the key.
func TestFIFORenewalWithTenThousandWaiters(t *testing.T) {
	const waiters = 10000
	for _, cc := range retryConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			srv := redistest.Start(t)
			direct := srv.Client(t)
			cfg := mutex.Config{Prefix: prefix(t), TTL: 20 * time.Second, FIFO: true}
			// Ten thousand Lock calls at once wait for the client's pool
			// longer than its default PoolTimeout on a loaded machine.
			m := newMutexOn(t, srv.Client(t, cc.Mod, func(o *redis.Options) { o.PoolTimeout = time.Minute }), cfg)
			holder := newMutex(t, srv, cfg)
			outsider := newMutex(t, srv, cfg)
			held := must[mutex.Lease](t)(holder.Lock(t.Context(), "k"))
			defer held.Unlock(context.Background())

			require.NoError(t, redistest.ResetStats(t.Context(), direct))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			results := make(chan grant, waiters)
			for range waiters {
				go func() {
					l, err := m.Lock(ctx, "k")
					results <- grant{l, err, time.Now()}
				}()
			}
			defer func() {
				cancel()
				for range waiters {
					unlockIfHeld(<-results)
				}
			}()

			queue := fifoQueueKey(cfg.Prefix, "k")
			zcard := func() int64 {
				n, err := direct.ZCard(context.Background(), queue).Result()
				require.NoError(t, err)
				return n
			}
			// Every waiter has joined the queue once Redis ran as many ZADDs.
			joined := func() bool {
				stats, err := redistest.CommandStats(context.Background(), direct)
				require.NoError(t, err)
				return stats["zadd"] >= waiters
			}
			start := time.Now()
			require.Eventually(t, joined, 60*time.Second, 10*time.Millisecond, "the waiters never joined the queue")
			t.Logf("joined after %v", time.Since(start))

			time.Sleep(3 * mutex.FIFOLiveness)
			assert.EqualValues(t, waiters, zcard(), "waiters left in the queue after %v", 3*mutex.FIFOLiveness)

			require.NoError(t, held.Unlock(ctx))
			l, err := outsider.TryLock(ctx, "k")
			if l != nil {
				_ = l.Unlock(ctx)
			}
			assert.ErrorIs(t, err, mutex.ErrNotObtained, "the outsider's TryLock jumped the queue")
		})
	}
}

// A FIFO waiter whose handover message is held up until after the grant
// ran out, the lock went to the next waiter and the first waiter queued
// again, does not take that stale message for a grant: it gets no lease
// that looks held while the next waiter holds the key, and any lease it
// gets later has a greater fence.
func TestFIFOStaleHandoverMessageGrantsNothing(t *testing.T) {
	for _, cc := range retryConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			srv := redistest.Shared(t)
			direct := srv.Client(t)
			p := newFaultProxy(t, srv.Addr())
			cfg := mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second, FIFO: true}
			a := newMutex(t, srv, cfg)
			b := newMutexOn(t, p.client(t, cc.Mod), cfg)
			c := newMutex(t, srv, cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			queued := func(n int64) {
				t.Helper()
				require.Eventually(t, func() bool {
					got, err := direct.ZCard(ctx, fifoQueueKey(cfg.Prefix, "k")).Result()
					return err == nil && got == n
				}, 5*time.Second, time.Millisecond, "the queue never held %d waiters", n)
			}

			held := must[mutex.Lease](t)(a.Lock(ctx, "k"))
			type outcome struct {
				lease mutex.Lease
				err   error
				held  bool // Err was nil when Lock returned
			}
			bCtx, bCancel := context.WithCancel(ctx)
			defer bCancel()
			bGot := make(chan outcome, 1)
			go func() {
				l, err := b.Lock(bCtx, "k")
				bGot <- outcome{l, err, l != nil && l.Err() == nil}
			}()
			queued(1)
			cGot := lockAsync(ctx, c, "k")
			queued(2)

			// The release hands the key to b, whose connections stall.
			p.stall(true, true)
			p.stall(false, true)
			require.NoError(t, held.Unlock(ctx))
			// The unconfirmed grant runs out and c gets the key.
			g := <-cGot
			require.NoError(t, g.err)
			cLease := g.lease
			defer cLease.Unlock(context.Background())
			// b learns it is no longer queued and queues again, then the
			// stale message arrives.
			p.stall(false, false)
			queued(1)
			time.Sleep(100 * time.Millisecond)
			p.stall(true, false)

			check := func(o outcome) {
				t.Helper()
				if o.lease == nil {
					return
				}
				defer o.lease.Unlock(context.Background())
				assert.Greater(t, o.lease.Fence(), cLease.Fence(), "b got a lease with a fence older than the holder's")
			}
			select {
			case o := <-bGot:
				assert.False(t, o.held && cLease.Err() == nil,
					"b's Lock returned a lease that looks held (fence %d) while c holds the key (fence %d)",
					fenceOf(o.lease), cLease.Fence())
				check(o)
				return
			case <-time.After(2 * time.Second):
			}
			require.NoError(t, cLease.Unlock(ctx))
			select {
			case o := <-bGot:
				check(o)
			case <-time.After(5 * time.Second):
				bCancel()
				<-bGot
				t.Error("b never got the key after c unlocked it")
			}
		})
	}
}

func fenceOf(l mutex.Lease) int64 {
	if l == nil {
		return 0
	}
	return l.Fence()
}

// With a TTL of a minute, whose drift allowance is over half the handover
// window, a FIFO handover still costs no round trip: the new holder's Lock
// returns on the release's message while its command connections stall,
// and confirms the lease in the background once they move again.
func TestFIFOHandoverWithLongTTLNeedsNoRoundTrip(t *testing.T) {
	for _, cc := range retryConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			srv := redistest.Shared(t)
			direct := srv.Client(t)
			p := newFaultProxy(t, srv.Addr())
			cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute, FIFO: true}
			a := newMutex(t, srv, cfg)
			b := newMutexOn(t, p.client(t, cc.Mod), cfg)
			held := must[mutex.Lease](t)(a.Lock(t.Context(), "k"))

			got := lockAsync(t.Context(), b, "k")
			require.Eventually(t, func() bool {
				return direct.ZCard(t.Context(), fifoQueueKey(cfg.Prefix, "k")).Val() == 1
			}, 5*time.Second, time.Millisecond, "b never queued")
			// Let the reply of b's join reach b before its connection stalls.
			time.Sleep(100 * time.Millisecond)
			p.stall(false, true)
			require.NoError(t, held.Unlock(t.Context()))
			g, ok := receiveWithin(got, 500*time.Millisecond)
			p.stall(false, false)
			if !ok {
				g = <-got
			}
			require.NoError(t, g.err)
			defer g.lease.Unlock(context.Background())
			require.True(t, ok, "Lock waited for a round trip on a stalled connection")
			assert.Greater(t, g.lease.Fence(), held.Fence())
			// The background confirmation made the lease last the TTL.
			time.Sleep(mutex.FIFOLiveness + 200*time.Millisecond)
			require.NoError(t, g.lease.Err())
			assert.Greater(t, direct.PTTL(t.Context(), lockKey(cfg.Prefix, "k")).Val(), 50*time.Second)
		})
	}
}
