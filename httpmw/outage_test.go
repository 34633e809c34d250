package httpmw_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// TestOneOutageOneAnswer sends concurrent requests, some on the same keys,
// while Redis cannot be reached: its replies are held back (a paused
// proxy), or it is stopped. Every request, whether it fails fast or waits
// with a budget, through a bare Mutex or through Retry, answers 503: none
// answers 409 because its budget ran out during a call that got no reply.
// With WithFailOpen, every handler runs, without a lease.
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
					h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if httpmw.LeaseFrom(r.Context()) == nil {
							unlocked.Add(1)
						}
					})
					mux := http.NewServeMux()
					mux.Handle("POST /fast/{id}", httpmw.Serialize(l, httpmw.PathValue("id"), log.hook())(h))
					mux.Handle("POST /wait/{id}", httpmw.Serialize(l, httpmw.PathValue("id"), log.hook(),
						httpmw.WithWait(300*time.Millisecond))(h))
					mux.Handle("POST /open/{id}", httpmw.Serialize(l, httpmw.PathValue("id"), log.hook(),
						httpmw.WithWait(300*time.Millisecond), httpmw.WithFailOpen())(h))
					web := serve(t, mux)

					switch fault {
					case "unanswered":
						p.Pause()
						t.Cleanup(p.Resume)
					case "stopped":
						srv.Stop(t)
					}
					const n = 12
					answers := make(chan response, 2*n)
					var wg sync.WaitGroup
					for i := range n {
						path := "/wait/"
						if i%4 == 0 {
							path = "/fast/"
						}
						wg.Go(func() { answers <- do(t, "POST", web.URL+path+fmt.Sprint(i%3), nil) })
						wg.Go(func() { answers <- do(t, "POST", web.URL+"/open/"+fmt.Sprint(i%3), nil) })
					}
					wg.Wait()
					close(answers)
					counts := map[string]int{}
					for a := range answers {
						counts[fmt.Sprintf("%d %s", a.status, a.body)]++
					}
					assert.Equal(t, map[string]int{"503 lock service unavailable": n, "200 ": n}, counts)
					assert.Equal(t, int32(n), unlocked.Load(), "fail-open handlers that ran")
					hooked := log.take()
					assert.Len(t, hooked, 2*n)
					for _, err := range hooked {
						assert.ErrorIs(t, err, httpmw.ErrUnavailable)
						assert.NotErrorIs(t, err, mutex.ErrNotObtained)
					}
				})
			}
		}
	}
}

// shortTimeouts bounds the go-redis calls that no context deadline bounds
// (those of a client without ContextTimeoutEnabled, and those of requests
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

// TestWaitBudgetRunsOutOnHeldKey checks the other side: with Redis
// healthy, a budget that runs out while the key is held answers 409, and
// the error names the key, both for a request that found the key held
// itself and for requests that waited behind another request of the same
// Mutex and made no attempt of their own.
func TestWaitBudgetRunsOutOnHeldKey(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		holder := backendMutex(t, backend, mutex.Config{})
		m := backendMutex(t, backend, mutex.Config{})
		held, err := holder.TryLock(t.Context(), "k")
		require.NoError(t, err)

		var log errLog
		h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
		mux := http.NewServeMux()
		mux.Handle("POST /long/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), httpmw.WithWait(time.Minute))(h))
		mux.Handle("POST /short/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), log.hook(),
			httpmw.WithWait(300*time.Millisecond), httpmw.WithFailOpen())(h))
		web := serve(t, mux)

		// A request that found the key held.
		res := do(t, "POST", web.URL+"/short/k", nil)
		assert.Equal(t, http.StatusConflict, res.status)
		assert.Equal(t, "resource busy", res.body)
		assertBusy(t, log.take(), 1)

		// Requests queued behind a waiting request of the same Mutex.
		long := async(t, "POST", web.URL+"/long/k")
		time.Sleep(100 * time.Millisecond) // the long request waits
		const n = 4
		answers := make(chan response, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { answers <- do(t, "POST", web.URL+"/short/k", nil) })
		}
		wg.Wait()
		close(answers)
		for a := range answers {
			assert.Equal(t, http.StatusConflict, a.status)
			assert.Equal(t, "resource busy", a.body)
			assert.NotEmpty(t, a.header.Get("Retry-After"))
		}
		assertBusy(t, log.take(), n)

		require.NoError(t, held.Unlock(t.Context()))
		assert.Equal(t, http.StatusOK, recv(t, long, "the long request").status)
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
		assert.NotErrorIs(t, err, httpmw.ErrUnavailable)
	}
}

// TestWaitBudgetEndsDuringRedisCall holds Redis's replies back past the
// budget while the key is free: no reply came within the budget, so the
// request answers 503, and with WithFailOpen runs without a lease.
func TestWaitBudgetEndsDuringRedisCall(t *testing.T) {
	srv := redistest.Shared(t)
	for _, tc := range redistest.FaultConfigs {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			m, p := newProxiedMutex(t, srv, mutex.Config{}, tc.Mod, shortTimeouts)
			var log errLog
			var ran, withLease atomic.Int32
			h := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				ran.Add(1)
				if httpmw.LeaseFrom(r.Context()) != nil {
					withLease.Add(1)
				}
			})
			mux := http.NewServeMux()
			mux.Handle("POST /closed/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), log.hook(),
				httpmw.WithWait(100*time.Millisecond))(h))
			mux.Handle("POST /open/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), log.hook(),
				httpmw.WithWait(100*time.Millisecond), httpmw.WithFailOpen())(h))
			web := serve(t, mux)

			p.Pause()
			t.Cleanup(p.Resume)
			res := do(t, "POST", web.URL+"/closed/k", nil)
			assert.Equal(t, http.StatusServiceUnavailable, res.status)
			assert.Equal(t, "lock service unavailable", res.body)
			assert.Zero(t, ran.Load())
			res = do(t, "POST", web.URL+"/open/k", nil)
			assert.Equal(t, http.StatusOK, res.status)
			assert.Equal(t, int32(1), ran.Load())
			assert.Zero(t, withLease.Load(), "fail open runs without a lease")
			p.Resume()

			hooked := log.take()
			require.Len(t, hooked, 2)
			for _, err := range hooked {
				assert.ErrorIs(t, err, httpmw.ErrUnavailable)
				assert.NotErrorIs(t, err, mutex.ErrNotObtained)
			}
		})
	}
}
