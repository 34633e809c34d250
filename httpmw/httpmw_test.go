package httpmw_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// gate is a handler that reports each request's start and holds it until
// released.
type gate struct {
	started chan string
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan string, 16), release: make(chan struct{})}
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.started <- r.PathValue("id")
	select {
	case <-g.release:
	case <-r.Context().Done():
	}
	fmt.Fprint(w, "done ", r.PathValue("id"))
}

func TestBusyKeyFailsFast(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		g := newGate()
		mux := http.NewServeMux()
		mux.Handle("POST /accounts/{id}", httpmw.Serialize(m, httpmw.PathValue("id"))(g))
		srv := serve(t, mux)

		first := async(t, "POST", srv.URL+"/accounts/a")
		require.Equal(t, "a", recv(t, g.started, "first handler"))

		busy := do(t, "POST", srv.URL+"/accounts/a", nil)
		assert.Equal(t, http.StatusConflict, busy.status)
		assert.Equal(t, "resource busy", busy.body)
		retry, err := strconv.Atoi(busy.header.Get("Retry-After"))
		require.NoError(t, err)
		// The holder's lease has at most the default TTL left.
		assert.True(t, retry >= 1 && retry <= int(mutex.DefaultTTL/time.Second), "Retry-After %d", retry)

		close(g.release)
		assert.Equal(t, "done a", recv(t, first, "first answer").body)
		// The key is free again.
		g.release = make(chan struct{})
		close(g.release)
		again := do(t, "POST", srv.URL+"/accounts/a", nil)
		assert.Equal(t, http.StatusOK, again.status)
	})
}

func TestDifferentKeysRunInParallel(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		g := newGate()
		mux := http.NewServeMux()
		mux.Handle("POST /accounts/{id}", httpmw.Serialize(m, httpmw.PathValue("id"))(g))
		srv := serve(t, mux)

		a := async(t, "POST", srv.URL+"/accounts/a")
		b := async(t, "POST", srv.URL+"/accounts/b")
		// Both handlers are inside at once: neither is released before both
		// started.
		got := []string{recv(t, g.started, "a handler"), recv(t, g.started, "another handler")}
		assert.ElementsMatch(t, []string{"a", "b"}, got)
		close(g.release)
		assert.Equal(t, http.StatusOK, recv(t, a, "a").status)
		assert.Equal(t, http.StatusOK, recv(t, b, "b").status)
	})
}

func TestWaitBudget(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		g := newGate()
		var mu sync.Mutex
		var events []string
		record := func(e string) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, e)
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			record("start " + r.URL.Query().Get("n"))
			if r.URL.Query().Get("n") == "1" {
				g.ServeHTTP(w, r)
			}
			record("end " + r.URL.Query().Get("n"))
		})
		mux := http.NewServeMux()
		mux.Handle("POST /wait/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), httpmw.WithWait(time.Minute))(h))
		mux.Handle("POST /short/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), httpmw.WithWait(50*time.Millisecond))(h))
		srv := serve(t, mux)

		first := async(t, "POST", srv.URL+"/wait/k?n=1")
		recv(t, g.started, "first handler")

		// A short budget runs out while the first request holds the key.
		short := do(t, "POST", srv.URL+"/short/k?n=3", nil)
		assert.Equal(t, http.StatusConflict, short.status)
		assert.NotEmpty(t, short.header.Get("Retry-After"))

		// A long budget waits for the first request to end.
		second := async(t, "POST", srv.URL+"/wait/k?n=2")
		close(g.release)
		assert.Equal(t, http.StatusOK, recv(t, first, "first").status)
		assert.Equal(t, http.StatusOK, recv(t, second, "second").status)
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"start 1", "end 1", "start 2", "end 2"}, events)
	})
}

func TestLeaseFromContext(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			lease := httpmw.LeaseFrom(r.Context())
			if lease == nil {
				http.Error(w, "no lease", http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "%s %d", strings.Join(lease.Keys(), ","), lease.Fence())
		})
		mux := http.NewServeMux()
		mux.Handle("PUT /orders/{id}", httpmw.Serialize(m, httpmw.Namespace("order", httpmw.PathValue("id")))(h))
		srv := serve(t, mux)

		var fences []int64
		for range 2 {
			res := do(t, "PUT", srv.URL+"/orders/7", nil)
			require.Equal(t, http.StatusOK, res.status, res.body)
			key, fence, _ := strings.Cut(res.body, " ")
			assert.Equal(t, "order:7", key)
			n, err := strconv.ParseInt(fence, 10, 64)
			require.NoError(t, err)
			fences = append(fences, n)
		}
		assert.Greater(t, fences[1], fences[0], "fencing tokens grow")
		assert.Nil(t, httpmw.LeaseFrom(t.Context()))
	})
}

func TestExtractors(t *testing.T) {
	m := newMutex(t, redistest.Shared(t), mutex.Config{})
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, httpmw.LeaseFrom(r.Context()).Keys()[0])
	})
	mux := http.NewServeMux()
	mux.Handle("POST /h", httpmw.Serialize(m, httpmw.Header("X-Account"))(echo))
	mux.Handle("POST /q", httpmw.Serialize(m, httpmw.Query("doc"))(echo))
	mux.Handle("POST /n/{id}", httpmw.Serialize(m, httpmw.Namespace("doc", httpmw.PathValue("id")))(echo))
	srv := serve(t, mux)

	assert.Equal(t, "acc-1", do(t, "POST", srv.URL+"/h", http.Header{"X-Account": {"acc-1"}}).body)
	assert.Equal(t, "d 9", do(t, "POST", srv.URL+"/q?doc=d+9", nil).body)
	assert.Equal(t, "doc:é", do(t, "POST", srv.URL+"/n/%C3%A9", nil).body)
}

func TestBadKeys(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	m := newMutex(t, srv, mutex.Config{})
	var ran atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran.Store(true) })
	var log errLog
	hook := log.hook()
	mux := http.NewServeMux()
	mux.Handle("POST /p/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), hook)(h))
	mux.Handle("POST /p/", httpmw.Serialize(m, httpmw.PathValue("id"), hook)(h))
	mux.Handle("POST /h", httpmw.Serialize(m, httpmw.Header("X-Key"), hook)(h))
	mux.Handle("POST /q", httpmw.Serialize(m, httpmw.Query("key"), hook)(h))
	mux.Handle("POST /n", httpmw.Serialize(m, httpmw.Namespace("ns", httpmw.Query("key")), hook)(h))
	mux.Handle("POST /f", httpmw.Serialize(m, func(*http.Request) (string, error) {
		return "", errors.New("lookup failed at 10.0.0.7:6379")
	}, hook)(h))
	web := serve(t, mux)
	require.NoError(t, redistest.ResetStats(t.Context(), rdb))

	long := strings.Repeat("k", httpmw.MaxKeyLen+1)
	tests := []struct {
		name   string
		path   string
		header http.Header
		body   string
		is     error
	}{
		{"no path value", "/p/", nil, "missing lock key", httpmw.ErrMissingKey},
		{"no header", "/h", nil, "missing lock key", httpmw.ErrMissingKey},
		{"empty header", "/h", http.Header{"X-Key": {""}}, "missing lock key", httpmw.ErrMissingKey},
		{"header twice", "/h", http.Header{"X-Key": {"a", "b"}}, "invalid lock key", httpmw.ErrInvalidKey},
		{"no query", "/q", nil, "missing lock key", httpmw.ErrMissingKey},
		{"empty query", "/q?key=", nil, "missing lock key", httpmw.ErrMissingKey},
		{"query twice", "/q?key=a&key=b", nil, "invalid lock key", httpmw.ErrInvalidKey},
		{"namespace without key", "/n", nil, "missing lock key", httpmw.ErrMissingKey},
		{"too long", "/q?key=" + long, nil, "invalid lock key", httpmw.ErrInvalidKey},
		{"too long with namespace", "/n?key=" + long[:httpmw.MaxKeyLen-2], nil, "invalid lock key", httpmw.ErrInvalidKey},
		{"not UTF-8", "/q?key=%FF%FE", nil, "invalid lock key", httpmw.ErrInvalidKey},
		{"control character", "/q?key=a%0Ab", nil, "invalid lock key", httpmw.ErrInvalidKey},
		{"escape character", "/p/a%1Bb", nil, "invalid lock key", httpmw.ErrInvalidKey},
		{"KeyFunc error", "/f", nil, "invalid lock key", httpmw.ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, "POST", web.URL+tt.path, tt.header)
			assert.Equal(t, http.StatusBadRequest, res.status)
			assert.Equal(t, tt.body, res.body)
			hooked := log.take()
			require.Len(t, hooked, 1)
			assert.ErrorIs(t, hooked[0], tt.is)
		})
	}
	assert.False(t, ran.Load(), "no handler ran")
	// Validation happens before any Redis call.
	stats, err := redistest.CommandStats(t.Context(), rdb)
	require.NoError(t, err)
	for cmd, n := range stats {
		assert.Contains(t, []string{"info", "config|resetstat", "config", "hello", "client|setinfo", "client"}, cmd, "%d %s calls", n, cmd)
	}
	// The longest valid key is accepted.
	ok := do(t, "POST", web.URL+"/q?key="+long[:httpmw.MaxKeyLen], nil)
	assert.Equal(t, http.StatusOK, ok.status, ok.body)
}

func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	m := newFaultMutex(t, srv, mutex.Config{})
	var log errLog
	hook := log.hook()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ran, lease %v", httpmw.LeaseFrom(r.Context()) != nil)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /closed/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), hook)(h))
	mux.Handle("POST /waiting/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), hook, httpmw.WithWait(time.Second))(h))
	mux.Handle("POST /open/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), hook, httpmw.WithFailOpen())(h))
	web := serve(t, mux)
	srv.Stop(t)

	for _, path := range []string{"/closed/a", "/waiting/a"} {
		res := do(t, "POST", web.URL+path, nil)
		assert.Equal(t, http.StatusServiceUnavailable, res.status, path)
		assert.Equal(t, "lock service unavailable", res.body, path)
		assert.NotContains(t, res.body, srv.Addr())
		hooked := log.take()
		require.Len(t, hooked, 1, path)
		assert.ErrorIs(t, hooked[0], httpmw.ErrUnavailable, path)
	}

	res := do(t, "POST", web.URL+"/open/a", nil)
	assert.Equal(t, http.StatusOK, res.status)
	assert.Equal(t, "ran, lease false", res.body)
	hooked := log.take()
	require.Len(t, hooked, 1)
	assert.ErrorIs(t, hooked[0], httpmw.ErrUnavailable)

	// Bad keys are still refused with Redis down, even when failing open.
	res = do(t, "POST", web.URL+"/open/a%00", nil)
	assert.Equal(t, http.StatusBadRequest, res.status)
}

func TestLeaseLossCancelsRequest(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		rdb := backend.Client(t)
		m := backendMutex(t, backend, mutex.Config{TTL: 300 * time.Millisecond})
		started := make(chan struct{})
		cause := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			select {
			case <-r.Context().Done():
				cause <- context.Cause(r.Context())
				http.Error(w, "lock lost", http.StatusServiceUnavailable)
			case <-time.After(20 * time.Second):
				cause <- errors.New("the request's context was not cancelled")
			}
		})
		hooked := make(chan error, 1)
		mw := httpmw.Serialize(m, httpmw.PathValue("id"), httpmw.WithErrorHook(func(_ *http.Request, err error) { hooked <- err }))
		mux := http.NewServeMux()
		mux.Handle("POST /docs/{id}", mw(h))
		web := serve(t, mux)

		res := async(t, "POST", web.URL+"/docs/d1")
		recv(t, started, "handler start")
		// Another actor wipes the lock: the next extension finds it gone.
		keys, err := redistest.Keys(t.Context(), rdb, m.Prefix()+"*")
		require.NoError(t, err)
		require.NotEmpty(t, keys)
		for _, k := range keys {
			require.NoError(t, rdb.Del(t.Context(), k).Err())
		}
		err = recv(t, cause, "cancellation")
		assert.ErrorIs(t, err, mutex.ErrNotHeld)
		assert.Equal(t, http.StatusServiceUnavailable, recv(t, res, "answer").status)
		assert.ErrorIs(t, recv(t, hooked, "hook"), mutex.ErrNotHeld)
	})
}

func TestBusyStatusAndErrorHandler(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		lease, err := m.TryLock(t.Context(), "held")
		require.NoError(t, err)
		t.Cleanup(func() { lease.Unlock(context.Background()) })

		h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
		mux := http.NewServeMux()
		mux.Handle("POST /status/{id}", httpmw.Serialize(m, httpmw.PathValue("id"), httpmw.WithBusyStatus(http.StatusLocked))(h))
		mux.Handle("POST /custom/{id}", httpmw.Serialize(m, httpmw.PathValue("id"),
			httpmw.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
				var ne *mutex.NotObtainedError
				if errors.As(err, &ne) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusTooManyRequests)
					fmt.Fprintf(w, `{"error":"busy","key":%q}`, ne.Key)
					return
				}
				http.Error(w, "other", http.StatusTeapot)
			}))(h))
		web := serve(t, mux)

		res := do(t, "POST", web.URL+"/status/held", nil)
		assert.Equal(t, http.StatusLocked, res.status)
		assert.Equal(t, "resource busy", res.body)
		assert.NotEmpty(t, res.header.Get("Retry-After"))

		res = do(t, "POST", web.URL+"/custom/held", nil)
		assert.Equal(t, http.StatusTooManyRequests, res.status)
		assert.Equal(t, `{"error":"busy","key":"held"}`, res.body)
		res = do(t, "POST", web.URL+"/custom/%7F", nil)
		assert.Equal(t, http.StatusTeapot, res.status)
	})
}

func TestSkip(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		lease, err := m.TryLock(t.Context(), "doc:1")
		require.NoError(t, err)
		t.Cleanup(func() { lease.Unlock(context.Background()) })

		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, httpmw.LeaseFrom(r.Context()) == nil)
		})
		mw := httpmw.Serialize(m, httpmw.Namespace("doc", httpmw.PathValue("id")),
			httpmw.WithSkipMethods(http.MethodGet, http.MethodHead),
			httpmw.WithSkip(func(r *http.Request) bool { return r.Header.Get("X-Dry-Run") == "1" }))
		mux := http.NewServeMux()
		mux.Handle("/docs/{id}", mw(h))
		web := serve(t, mux)

		res := do(t, "GET", web.URL+"/docs/1", nil)
		assert.Equal(t, http.StatusOK, res.status)
		assert.Equal(t, "true", res.body)
		res = do(t, "PUT", web.URL+"/docs/1", http.Header{"X-Dry-Run": {"1"}})
		assert.Equal(t, http.StatusOK, res.status)
		res = do(t, "PUT", web.URL+"/docs/1", nil)
		assert.Equal(t, http.StatusConflict, res.status)
	})
}

func TestHandlerLockingItsOwnKey(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			outer := httpmw.LeaseFrom(r.Context())
			// WithLock on the key of the request joins the request's lease.
			err := mutex.WithLock(r.Context(), m, "acct:1", func(ctx context.Context) error {
				if mutex.LeaseFromContext(ctx) != outer {
					return errors.New("WithLock did not join the request's lease")
				}
				return nil
			})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			// A direct Lock of that key fails at once instead of waiting.
			if _, err := m.Lock(r.Context(), "acct:1"); !errors.Is(err, mutex.ErrReentrant) {
				http.Error(w, fmt.Sprintf("Lock: %v", err), http.StatusInternalServerError)
				return
			}
			fmt.Fprint(w, "ok")
		})
		key := httpmw.Namespace("acct", httpmw.PathValue("id"))
		mux := http.NewServeMux()
		// Nested middleware on the same key joins too.
		mux.Handle("POST /accts/{id}", httpmw.Serialize(m, key)(httpmw.Serialize(m, key, httpmw.WithWait(time.Minute))(h)))
		web := serve(t, mux)

		res := do(t, "POST", web.URL+"/accts/1", nil)
		assert.Equal(t, http.StatusOK, res.status)
		assert.Equal(t, "ok", res.body)
	})
}

func TestPanicReleasesKey(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("panic") {
				panic(http.ErrAbortHandler)
			}
			fmt.Fprint(w, "ok")
		})
		mux := http.NewServeMux()
		mux.Handle("POST /x/{id}", httpmw.Serialize(m, httpmw.PathValue("id"))(h))
		web := serve(t, mux)

		req, err := http.NewRequestWithContext(t.Context(), "POST", web.URL+"/x/p?panic", nil)
		require.NoError(t, err)
		_, err = http.DefaultClient.Do(req)
		require.Error(t, err, "the server aborts the response")
		// The key was released when the handler panicked.
		assert.Equal(t, http.StatusOK, do(t, "POST", web.URL+"/x/p", nil).status)
		st, err := m.Check(t.Context(), "p")
		require.NoError(t, err)
		assert.Equal(t, mutex.Available, st)
	})
}

func TestSetupErrors(t *testing.T) {
	m := newMutex(t, redistest.Shared(t), mutex.Config{})
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler ran") })
	tests := []struct {
		name string
		mw   func(hook httpmw.Option) func(http.Handler) http.Handler
		msg  string
	}{
		{"nil Locker", func(o httpmw.Option) func(http.Handler) http.Handler {
			return httpmw.Serialize(nil, httpmw.Query("k"), o)
		}, "mutex: invalid argument: nil Locker"},
		{"nil KeyFunc", func(o httpmw.Option) func(http.Handler) http.Handler {
			return httpmw.Serialize(m, nil, o)
		}, "mutex: invalid argument: nil KeyFunc"},
		{"negative wait", func(o httpmw.Option) func(http.Handler) http.Handler {
			return httpmw.Serialize(m, httpmw.Query("k"), o, httpmw.WithWait(-time.Second))
		}, "mutex: invalid argument: negative wait -1s"},
		{"busy status 200", func(o httpmw.Option) func(http.Handler) http.Handler {
			return httpmw.Serialize(m, httpmw.Query("k"), o, httpmw.WithBusyStatus(http.StatusOK))
		}, "mutex: invalid argument: busy status 200 is not an error status"},
		{"Namespace of nil", func(o httpmw.Option) func(http.Handler) http.Handler {
			return httpmw.Serialize(m, httpmw.Namespace("ns", nil), o)
		}, "mutex: invalid argument: nil KeyFunc"},
		{"Locker refusing its setup", func(o httpmw.Option) func(http.Handler) http.Handler {
			return httpmw.Serialize(badLocker{m}, httpmw.Query("k"), o)
		}, "mutex: invalid argument: bad option"},
		{"nil handler", func(o httpmw.Option) func(http.Handler) http.Handler {
			return func(http.Handler) http.Handler { return httpmw.Serialize(m, httpmw.Query("k"), o)(nil) }
		}, "mutex: invalid argument: nil handler"},
		{"several problems", func(o httpmw.Option) func(http.Handler) http.Handler {
			return httpmw.Serialize(nil, nil, o, httpmw.WithWait(-time.Second), httpmw.WithBusyStatus(0))
		}, "mutex: invalid argument: nil Locker\n" +
			"mutex: invalid argument: nil KeyFunc\n" +
			"mutex: invalid argument: negative wait -1s\n" +
			"mutex: invalid argument: busy status 0 is not an error status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log errLog
			web := serve(t, tt.mw(log.hook())(h))
			res := do(t, "POST", web.URL+"/?k=a", nil)
			assert.Equal(t, http.StatusInternalServerError, res.status)
			assert.Equal(t, "lock misconfigured", res.body)
			hooked := log.take()
			require.Len(t, hooked, 1)
			assert.ErrorIs(t, hooked[0], mutex.ErrInvalid)
			assert.EqualError(t, hooked[0], tt.msg)
		})
	}
}

func TestClosedMutex(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m, err := mutex.New(backend.Client(t), mutex.Config{Prefix: prefix(t)})
		require.NoError(t, err)
		require.NoError(t, m.Close())
		web := serve(t, httpmw.Serialize(m, httpmw.Query("k"), httpmw.WithWait(time.Second))(http.NotFoundHandler()))
		res := do(t, "POST", web.URL+"/?k=a", nil)
		assert.Equal(t, http.StatusServiceUnavailable, res.status)
		assert.Equal(t, "lock service unavailable", res.body)
	})
}

func TestRequestEndsWhileWaiting(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		lease, err := m.TryLock(t.Context(), "w")
		require.NoError(t, err)
		t.Cleanup(func() { lease.Unlock(context.Background()) })

		hooked := make(chan error, 2)
		mw := httpmw.Serialize(m, httpmw.Query("k"), httpmw.WithWait(time.Minute),
			httpmw.WithErrorHook(func(_ *http.Request, err error) { hooked <- err }))
		h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler ran") })
		// A server-side deadline on the request, shorter than the wait budget.
		deadline := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx, cancel := context.WithTimeout(r.Context(), 100*time.Millisecond)
				defer cancel()
				next.ServeHTTP(w, r.WithContext(ctx))
			})
		}
		web := serve(t, deadline(mw(h)))

		res := do(t, "POST", web.URL+"/?k=w", nil)
		assert.Equal(t, http.StatusServiceUnavailable, res.status)
		assert.Equal(t, "request ended", res.body)
		err = recv(t, hooked, "hook")
		assert.ErrorIs(t, err, mutex.ErrNotObtained)
		assert.ErrorIs(t, err, context.DeadlineExceeded)

		// A client that gives up ends the wait as well.
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "POST", serve(t, mw(h)).URL+"/?k=w", nil)
		require.NoError(t, err)
		_, err = http.DefaultClient.Do(req)
		require.Error(t, err)
		err = recv(t, hooked, "hook")
		assert.ErrorIs(t, err, mutex.ErrNotObtained)
		assert.ErrorIs(t, err, context.Canceled)
	})
}

// badLocker is a Locker whose own configuration is bad.
type badLocker struct{ mutex.Locker }

func (badLocker) TryLock(context.Context, ...string) (mutex.Lease, error) {
	return nil, fmt.Errorf("%w: bad option", mutex.ErrInvalid)
}

func TestLeaseExtendedWhileHandlerRuns(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		const ttl = 500 * time.Millisecond
		m := backendMutex(t, backend, mutex.Config{TTL: ttl})
		other := backendMutex(t, backend, mutex.Config{TTL: ttl})
		g := newGate()
		ended := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			g.ServeHTTP(w, r)
			ended <- context.Cause(r.Context())
		})
		mux := http.NewServeMux()
		mux.Handle("POST /long/{id}", httpmw.Serialize(m, httpmw.PathValue("id"))(h))
		web := serve(t, mux)

		res := async(t, "POST", web.URL+"/long/job")
		recv(t, g.started, "handler start")
		// Well past the TTL, the request still holds its key.
		time.Sleep(3 * ttl)
		_, err := other.TryLock(t.Context(), "job")
		assert.ErrorIs(t, err, mutex.ErrNotObtained)
		close(g.release)
		assert.NoError(t, recv(t, ended, "handler end"), "the request's context was not cancelled")
		assert.Equal(t, http.StatusOK, recv(t, res, "answer").status)
	})
}
