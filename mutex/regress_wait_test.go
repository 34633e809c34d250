package mutex_test

import (
	"bytes"
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

// A Lock of a free key does not wait behind an earlier Lock of the same
// Mutex that also wants the key but waits for another, held key.
func TestLockOfFreeKeyDoesNotWaitBehindLockOfHeldKey(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		for _, cc := range retryConfigs {
			t.Run(cc.Name, func(t *testing.T) {
				cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second}
				m := newMutexOn(t, backend.Client(t, cc.UniversalMod), cfg)
				other := backendMutex(t, backend, cfg)
				hot := must[mutex.Lease](t)(other.Lock(t.Context(), "hot"))
				defer hot.Unlock(context.Background())

				firstCtx, cancelFirst := context.WithCancel(t.Context())
				first := lockAsync(firstCtx, m, "hot", "aux")
				defer func() {
					cancelFirst()
					unlockIfHeld(<-first)
				}()
				time.Sleep(200 * time.Millisecond)
				require.Zero(t, len(first), "the Lock of the held and the free key returned while the held key was held")

				ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
				defer cancel()
				start := time.Now()
				l, err := m.Lock(ctx, "aux")
				require.NoError(t, err, "Lock of the free key returned after %v, with a TTL of %v", time.Since(start), cfg.TTL)
				require.NoError(t, l.Unlock(ctx))
			})
		}
	})
}

// A Lock whose wait budget ends while a Redis call is in flight (the
// connection stalls, the key is held by another Mutex) reports the
// contention and the context's end, not a bare network or context error.
// (A TryLock does not wait: its failed call is reported as such.)
func TestWaitBudgetEndingDuringRedisCallIsNotObtained(t *testing.T) {
	clients := append(retryConfigs[:len(retryConfigs):len(retryConfigs)],
		redistest.ContextTimeouts)
	ops := []struct {
		name string
		call func(*mutex.Mutex, context.Context, ...string) (mutex.Lease, error)
	}{
		{"Lock", (*mutex.Mutex).Lock},
	}
	for _, fifo := range []bool{false, true} {
		for _, cc := range clients {
			for _, op := range ops {
				t.Run(fmt.Sprintf("fifo=%v/%s/%s", fifo, cc.Name, op.name), func(t *testing.T) {
					t.Parallel()
					srv := redistest.Shared(t)
					proxy := redistest.NewProxy(t, srv.Addr())
					cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: fifo}
					m := newMutexOn(t, srv.Client(t, cc.Mod, func(o *redis.Options) { o.Addr = proxy.Addr() }), cfg)
					other := newMutex(t, srv, cfg)
					held := must[mutex.Lease](t)(other.Lock(t.Context(), "k"))
					defer held.Unlock(context.Background())
					// A first call opens the connection that then stalls.
					must[mutex.Status](t)(m.Check(t.Context(), "k"))

					proxy.Pause()
					defer proxy.Resume()
					ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
					defer cancel()
					l, err := op.call(m, ctx, "k")
					if l != nil {
						_ = l.Unlock(context.Background())
					}
					require.Error(t, err)
					assert.ErrorIs(t, err, mutex.ErrNotObtained)
					assert.ErrorIs(t, err, context.DeadlineExceeded)
					var noe *mutex.NotObtainedError
					assert.True(t, errors.As(err, &noe), "%T is not a *NotObtainedError", err)
				})
			}
		}
	}
}

// Close ends a Lock that waits for its pub/sub subscription to be
// confirmed, at once, and in FIFO mode the Lock leaves nothing in the
// Redis queues.
func TestCloseEndsLockWaitingForSubscription(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		for _, cc := range retryConfigs {
			t.Run(fmt.Sprintf("fifo=%v/%s", fifo, cc.Name), func(t *testing.T) {
				t.Parallel()
				srv := redistest.Shared(t)
				direct := srv.Client(t)
				p := newFaultProxy(t, srv.Addr())
				cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second, FIFO: fifo}
				m := newMutexOn(t, p.client(t, cc.Mod), cfg)
				other := newMutex(t, srv, cfg)
				held := must[mutex.Lease](t)(other.Lock(t.Context(), "a"))
				defer held.Unlock(context.Background())

				stall := p.arm(holdBack, subscribeCmd)
				defer stall.Cut()
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				got := lockAsync(ctx, m, "a", "b")
				select {
				case <-stall.Hit():
				case <-time.After(5 * time.Second):
					t.Fatal("the Lock never subscribed")
				}
				time.Sleep(100 * time.Millisecond)

				closed := make(chan error, 1)
				go func() { closed <- m.Close() }()
				g, ok := receiveWithin(got, 2*time.Second)
				if !ok {
					t.Errorf("Lock still waits 2s after Close, with a TTL of %v", cfg.TTL)
					cancel()
					g = <-got
				}
				unlockIfHeld(g)
				assert.ErrorIs(t, g.err, mutex.ErrClosed)
				select {
				case <-closed:
				case <-time.After(10 * time.Second):
					t.Fatal("Close did not return")
				}
				if fifo {
					for _, k := range []string{"a", "b"} {
						n, err := direct.ZCard(context.Background(), fifoQueueKey(cfg.Prefix, k)).Result()
						require.NoError(t, err)
						assert.Zero(t, n, "waiters left in the queue of %q", k)
					}
				}
			})
		}
	}
}

// A subscription request that was lost with its connection, by a waiter
// that has left since, does not keep later waiters of the key from
// learning of its release.
func TestLockAfterLostSubscribeWakesOnRelease(t *testing.T) {
	for _, cc := range retryConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Shared(t)
			p := newFaultProxy(t, srv.Addr())
			cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second}
			m := newMutexOn(t, p.client(t, cc.Mod), cfg)
			other := newMutex(t, srv, cfg)
			held := must[mutex.Lease](t)(other.Lock(t.Context(), "k"))

			lost := p.arm(holdBack, subscribeCmd)
			short, cancelShort := context.WithTimeout(t.Context(), 500*time.Millisecond)
			_, err := m.Lock(short, "k")
			cancelShort()
			require.ErrorIs(t, err, mutex.ErrNotObtained)
			require.True(t, isClosed(lost.Hit()), "the Lock never subscribed")
			lost.Cut()
			time.Sleep(300 * time.Millisecond)

			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			got := lockAsync(ctx, m, "k")
			time.Sleep(300 * time.Millisecond)
			requireWokenByRelease(t, ctx, held, got, cfg.TTL)
		})
	}
}

// failFirstSubscribe is a connection whose first write of a SUBSCRIBE
// fails, closing it, once armed.
type failFirstSubscribe struct {
	net.Conn
	armed *atomic.Bool
}

func (c *failFirstSubscribe) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("$9\r\nsubscribe\r\n")) && c.armed.CompareAndSwap(true, false) {
		_ = c.Conn.Close()
		return 0, errors.New("injected write failure")
	}
	return c.Conn.Write(b)
}

// A SUBSCRIBE whose write fails makes go-redis reconnect and subscribe
// again to the channels it knew before that request, not to the new one:
// the request is written again, so the waiter still hears the release.
func TestFailedSubscribeWriteIsRetried(t *testing.T) {
	for _, cc := range retryConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			srv := redistest.Shared(t)
			cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second}
			armed := new(atomic.Bool)
			armed.Store(true)
			c := srv.Client(t, cc.Mod, func(o *redis.Options) {
				o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
					var d net.Dialer
					conn, err := d.DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return &failFirstSubscribe{Conn: conn, armed: armed}, nil
				}
			})
			m := newMutexOn(t, c, cfg)
			other := newMutex(t, srv, cfg)
			held := must[mutex.Lease](t)(other.Lock(t.Context(), "k"))

			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			got := lockAsync(ctx, m, "k")
			require.Eventually(t, func() bool { return !armed.Load() }, 5*time.Second, time.Millisecond,
				"the SUBSCRIBE was never written")
			time.Sleep(300 * time.Millisecond)
			requireWokenByRelease(t, ctx, held, got, cfg.TTL)
		})
	}
}

// requireWokenByRelease releases held and requires the Lock behind got to
// return a lease within 2s, far less than the TTL it would otherwise wait
// out. The lease is unlocked when the test ends.
func requireWokenByRelease(t *testing.T, ctx context.Context, held mutex.Lease, got <-chan grant, ttl time.Duration) {
	t.Helper()
	require.NoError(t, held.Unlock(ctx))
	released := time.Now()
	g, ok := receiveWithin(got, 2*time.Second)
	if !ok {
		g = <-got
	}
	t.Cleanup(func() { unlockIfHeld(g) })
	require.True(t, ok, "Lock still waited 2s after the release, with a TTL of %v; it returned %v after it with %v",
		ttl, g.at.Sub(released), g.err)
	require.NoError(t, g.err)
}
