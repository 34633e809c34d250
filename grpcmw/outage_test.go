package grpcmw_test

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
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/distlock/distlock/grpcmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// shortTimeouts bounds the go-redis calls that no context deadline bounds
// (those of a client without ContextTimeoutEnabled, and those of calls
// without a wait budget) to a second, instead of the defaults' three to
// five, and keeps go-redis from starting a background re-dialer that would
// outlive the test.
func shortTimeouts(o *redis.Options) {
	o.DialTimeout = time.Second
	o.ReadTimeout = time.Second
	o.WriteTimeout = time.Second
	o.PoolSize = 1000
	o.DialerRetries = 1
}

// TestOneOutageOneAnswer sends concurrent calls, some on the same keys,
// while Redis cannot be reached: its replies are held back (a paused
// proxy), or it is stopped. Every call, whether it fails fast or waits with
// a budget, through a bare Mutex or through Retry, fails with Unavailable:
// none gets Aborted because its budget ran out during a Redis call that
// got no reply. With WithFailOpen, every handler runs, without a lease.
func TestOneOutageOneAnswer(t *testing.T) {
	for _, fault := range []string{"unanswered", "stopped"} {
		for _, tc := range redistest.FaultConfigs {
			for _, chain := range []string{"mutex", "retry"} {
				t.Run(fault+"/"+tc.Name+"/"+chain, func(t *testing.T) {
					t.Parallel()
					srv := redistest.Start(t)
					client, p := redistest.ProxiedClient(t, srv, tc.Mod, shortTimeouts)
					m, err := mutex.New(client, mutex.Config{Prefix: prefix(t)})
					require.NoError(t, err)
					t.Cleanup(func() { m.Close() })
					var l mutex.Locker = m
					if chain == "retry" {
						l = middleware.Chain(m, middleware.Retry(middleware.WithAttempts(3)))
					}

					var log errLog
					var unlocked atomic.Int32
					impl := &health{check: func(ctx context.Context, _ *healthpb.HealthCheckRequest) error {
						if grpcmw.LeaseFrom(ctx) == nil {
							unlocked.Add(1)
						}
						return nil
					}}
					fast := serve(t, impl, unary(l, byService, log.hook()))
					wait := serve(t, impl, unary(l, byService, log.hook(), grpcmw.WithWait(300*time.Millisecond)))
					open := serve(t, impl, unary(l, byService, log.hook(),
						grpcmw.WithWait(300*time.Millisecond), grpcmw.WithFailOpen()))

					switch fault {
					case "unanswered":
						p.Pause()
						t.Cleanup(p.Resume)
					case "stopped":
						srv.Stop(t)
					}
					const n = 12
					answers := make(chan string, 2*n)
					call := func(c healthpb.HealthClient, service string) {
						_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
						st := status.Convert(err)
						answers <- fmt.Sprintf("%v %s", st.Code(), st.Message())
					}
					var wg sync.WaitGroup
					for i := range n {
						c := wait
						if i%4 == 0 {
							c = fast
						}
						wg.Go(func() { call(c, fmt.Sprint(i%3)) })
						wg.Go(func() { call(open, fmt.Sprint(i%3)) })
					}
					wg.Wait()
					close(answers)
					counts := map[string]int{}
					for a := range answers {
						counts[a]++
					}
					assert.Equal(t, map[string]int{"Unavailable lock service unavailable": n, "OK ": n}, counts)
					assert.Equal(t, int32(n), unlocked.Load(), "fail-open handlers that ran")
					hooked := log.take()
					assert.Len(t, hooked, 2*n)
					for _, err := range hooked {
						assert.ErrorIs(t, err, grpcmw.ErrUnavailable)
						assert.NotErrorIs(t, err, mutex.ErrNotObtained)
					}
				})
			}
		}
	}
}

// TestWaitBudgetRunsOutOnHeldKey checks the other side: with Redis
// healthy, a budget that runs out while the key is held gives Aborted, and
// the error names the key, both for a call that found the key held itself
// and for calls that waited behind another call of the same Mutex and made
// no attempt of their own.
func TestWaitBudgetRunsOutOnHeldKey(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		holder := backendMutex(t, backend, mutex.Config{})
		m := backendMutex(t, backend, mutex.Config{})
		held, err := holder.TryLock(t.Context(), "k")
		require.NoError(t, err)

		var log errLog
		impl := &health{}
		long := serve(t, impl, unary(m, byService, grpcmw.WithWait(time.Minute)))
		short := serve(t, impl, unary(m, byService, log.hook(),
			grpcmw.WithWait(300*time.Millisecond), grpcmw.WithFailOpen()))

		// A call that found the key held.
		_, err = short.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "k"})
		assert.Equal(t, codes.Aborted, status.Code(err))
		assertBusy(t, log.take(), 1)

		// Calls queued behind a waiting call of the same Mutex.
		first := check(t, long, "k")
		time.Sleep(100 * time.Millisecond) // the long call waits
		const n = 4
		codesSeen := make(chan codes.Code, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				_, err := short.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "k"})
				codesSeen <- status.Code(err)
			})
		}
		wg.Wait()
		close(codesSeen)
		for c := range codesSeen {
			assert.Equal(t, codes.Aborted, c)
		}
		assertBusy(t, log.take(), n)

		require.NoError(t, held.Unlock(t.Context()))
		require.NoError(t, recv(t, first, "the long call"))
	})
}

// assertBusy checks that hooked holds n errors of a wait budget that ran
// out on key "k".
func assertBusy(t *testing.T, hooked []error, n int) {
	t.Helper()
	require.Len(t, hooked, n)
	for _, err := range hooked {
		var ne *mutex.NotObtainedError
		require.ErrorAs(t, err, &ne)
		assert.Equal(t, "k", ne.Key, "%v", err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.NotErrorIs(t, err, grpcmw.ErrUnavailable)
	}
}

// TestWaitBudgetEndsDuringRedisCall holds Redis's replies back past the
// budget while the key is free: no reply came within the budget, so the
// call fails with Unavailable, and with WithFailOpen runs without a lease.
func TestWaitBudgetEndsDuringRedisCall(t *testing.T) {
	srv := redistest.Shared(t)
	for _, tc := range redistest.FaultConfigs {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			m, p := newProxiedMutex(t, srv, mutex.Config{}, tc.Mod, shortTimeouts)
			var log errLog
			var ran, withLease atomic.Int32
			impl := &health{check: func(ctx context.Context, _ *healthpb.HealthCheckRequest) error {
				ran.Add(1)
				if grpcmw.LeaseFrom(ctx) != nil {
					withLease.Add(1)
				}
				return nil
			}}
			closed := serve(t, impl, unary(m, byService, log.hook(), grpcmw.WithWait(100*time.Millisecond)))
			open := serve(t, impl, unary(m, byService, log.hook(),
				grpcmw.WithWait(100*time.Millisecond), grpcmw.WithFailOpen()))

			p.Pause()
			t.Cleanup(p.Resume)
			_, err := closed.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "a"})
			st := status.Convert(err)
			assert.Equal(t, codes.Unavailable, st.Code())
			assert.Equal(t, "lock service unavailable", st.Message())
			assert.Zero(t, ran.Load())
			_, err = open.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "a"})
			assert.NoError(t, err)
			assert.Equal(t, int32(1), ran.Load())
			assert.Zero(t, withLease.Load(), "fail open runs without a lease")
			p.Resume()

			hooked := log.take()
			require.Len(t, hooked, 2)
			for _, err := range hooked {
				assert.ErrorIs(t, err, grpcmw.ErrUnavailable)
				assert.NotErrorIs(t, err, mutex.ErrNotObtained)
			}
		})
	}
}
