package grpcmw_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/distlock/distlock/grpcmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// gate holds each call until released and reports its start.
type gate struct {
	started chan string
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan string, 16), release: make(chan struct{})}
}

func (g *gate) check(ctx context.Context, req *healthpb.HealthCheckRequest) error {
	g.started <- req.GetService()
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	return nil
}

func TestBusyKeyAborts(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		g := newGate()
		c := serve(t, &health{check: g.check}, unary(m, byService))

		first := check(t, c, "a")
		require.Equal(t, "a", recv(t, g.started, "first handler"))

		_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "a"})
		st := status.Convert(err)
		assert.Equal(t, codes.Aborted, st.Code())
		assert.Equal(t, "resource busy", st.Message())
		require.Len(t, st.Details(), 1)
		info, ok := st.Details()[0].(*errdetails.RetryInfo)
		require.True(t, ok, "detail %T", st.Details()[0])
		d := info.GetRetryDelay().AsDuration()
		assert.True(t, d > 0 && d <= mutex.DefaultTTL, "retry delay %v", d)

		close(g.release)
		require.NoError(t, recv(t, first, "first answer"))
		_, err = c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "a"})
		assert.NoError(t, err, "the key is free again")
	})
}

func TestDifferentKeysRunInParallel(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		g := newGate()
		c := serve(t, &health{check: g.check}, unary(m, byService))

		a, b := check(t, c, "a"), check(t, c, "b")
		got := []string{recv(t, g.started, "a handler"), recv(t, g.started, "another handler")}
		assert.ElementsMatch(t, []string{"a", "b"}, got)
		close(g.release)
		assert.NoError(t, recv(t, a, "a"))
		assert.NoError(t, recv(t, b, "b"))
	})
}

func TestWaitBudget(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		g := newGate()
		holder := serve(t, &health{check: g.check}, unary(m, byService))
		var mu sync.Mutex
		var events []string
		record := func(ctx context.Context, req *healthpb.HealthCheckRequest) error {
			mu.Lock()
			defer mu.Unlock()
			// On a loaded machine the server may learn that a client gave up
			// only after granting its call the lock (the interceptor then
			// skips the handler, unless the news comes later still): count
			// the calls whose client still waits.
			if ctx.Err() == nil {
				events = append(events, req.GetService())
			}
			return nil
		}
		long := serve(t, &health{check: record}, unary(m, byService, grpcmw.WithWait(time.Minute)))
		short := serve(t, &health{check: record}, unary(m, byService, grpcmw.WithWait(50*time.Millisecond)))

		first := check(t, holder, "k")
		recv(t, g.started, "first handler")

		// The budget runs out while the key is held: Aborted.
		_, err := short.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "k"})
		assert.Equal(t, codes.Aborted, status.Code(err))
		// The call's own deadline passes first: DeadlineExceeded.
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		_, err = long.Check(ctx, &healthpb.HealthCheckRequest{Service: "k"})
		cancel()
		assert.Equal(t, codes.DeadlineExceeded, status.Code(err))
		mu.Lock()
		assert.Empty(t, events, "no handler ran while the key was held")
		mu.Unlock()

		// A long budget waits for the holder.
		second := check(t, long, "k")
		close(g.release)
		require.NoError(t, recv(t, first, "first"))
		require.NoError(t, recv(t, second, "second"))
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"k"}, events)
	})
}

func TestLeaseFromContext(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		var mu sync.Mutex
		leases := map[string]mutex.Lease{}
		c := serve(t, &health{check: func(ctx context.Context, req *healthpb.HealthCheckRequest) error {
			mu.Lock()
			defer mu.Unlock()
			leases[req.GetService()] = grpcmw.LeaseFrom(ctx)
			return nil
		}}, unary(m, grpcmw.Namespace("svc", func(ctx context.Context, method string, req any) (string, bool, error) {
			if method != healthpb.Health_Check_FullMethodName {
				return "", false, fmt.Errorf("unexpected method %s", method)
			}
			s := req.(*healthpb.HealthCheckRequest).GetService()
			// The empty service is not serialized.
			return s, s != "", nil
		})))

		for _, s := range []string{"x", ""} {
			_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: s})
			require.NoError(t, err)
		}
		mu.Lock()
		defer mu.Unlock()
		require.NotNil(t, leases["x"])
		assert.Equal(t, []string{"svc:x"}, leases["x"].Keys())
		assert.Positive(t, leases["x"].Fence())
		assert.ErrorIs(t, leases["x"].Err(), mutex.ErrReleased, "released after the call")
		assert.Nil(t, leases[""], "a call the KeyFunc does not serialize has no lease")
		assert.Nil(t, grpcmw.LeaseFrom(t.Context()))
	})
}

func TestStream(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		started := make(chan []string, 4)
		release := make(chan struct{})
		impl := &health{watch: func(_ *healthpb.HealthCheckRequest, ss healthpb.Health_WatchServer) error {
			lease := grpcmw.LeaseFrom(ss.Context())
			if lease == nil {
				return status.Error(codes.Internal, "no lease")
			}
			started <- lease.Keys()
			select {
			case <-release:
			case <-ss.Context().Done():
			}
			return nil
		}}
		c := serve(t, impl, grpc.ChainStreamInterceptor(grpcmw.StreamServerInterceptor(m, grpcmw.Namespace("acct", grpcmw.Metadata("x-account")))))
		watch := func(ctx context.Context, account string) error {
			if account != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "x-account", account)
			}
			ss, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return err
			}
			for {
				if _, err := ss.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		}
		done := make(chan error, 1)
		var wg sync.WaitGroup
		t.Cleanup(wg.Wait)
		wg.Go(func() { done <- watch(t.Context(), "a1") })
		assert.Equal(t, []string{"acct:a1"}, recv(t, started, "first stream"))

		err := watch(t.Context(), "a1")
		assert.Equal(t, codes.Aborted, status.Code(err))
		assert.Equal(t, "resource busy", status.Convert(err).Message())
		err = watch(t.Context(), "")
		assert.Equal(t, codes.InvalidArgument, status.Code(err))
		assert.Equal(t, "missing lock key", status.Convert(err).Message())

		close(release)
		require.NoError(t, recv(t, done, "first stream end"))
		assert.NoError(t, watch(t.Context(), "a1"))
	})
}

func TestBadKeys(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	m := newMutex(t, srv, mutex.Config{})
	var ran atomic.Bool
	var log errLog
	impl := &health{check: func(context.Context, *healthpb.HealthCheckRequest) error {
		ran.Store(true)
		return nil
	}}
	c := serve(t, impl, unary(m, grpcmw.Namespace("ns", func(_ context.Context, _ string, req any) (string, bool, error) {
		s := req.(*healthpb.HealthCheckRequest).GetService()
		if s == "fail" {
			return "", true, errors.New("lookup failed at 10.0.0.7:6379")
		}
		return s, true, nil
	}), log.hook()))
	require.NoError(t, redistest.ResetStats(t.Context(), rdb))

	tests := []struct {
		name, service, msg string
		is                 error
	}{
		{"empty", "", "missing lock key", grpcmw.ErrMissingKey},
		{"too long", strings.Repeat("k", grpcmw.MaxKeyLen), "invalid lock key", grpcmw.ErrInvalidKey},
		{"control character", "a\nb", "invalid lock key", grpcmw.ErrInvalidKey},
		{"NUL", "a\x00", "invalid lock key", grpcmw.ErrInvalidKey},
		{"KeyFunc error", "fail", "invalid lock key", grpcmw.ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: tt.service})
			st := status.Convert(err)
			assert.Equal(t, codes.InvalidArgument, st.Code())
			assert.Equal(t, tt.msg, st.Message())
			hooked := log.take()
			require.Len(t, hooked, 1)
			assert.ErrorIs(t, hooked[0], tt.is)
		})
	}
	assert.False(t, ran.Load(), "no handler ran")
	stats, err := redistest.CommandStats(t.Context(), rdb)
	require.NoError(t, err)
	for cmd, n := range stats {
		assert.Contains(t, []string{"info", "config|resetstat", "hello", "client|setinfo"}, cmd, "%d %s calls", n, cmd)
	}
	// The longest valid key is accepted: "ns:" and 253 bytes.
	_, err = c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: strings.Repeat("k", grpcmw.MaxKeyLen-3)})
	assert.NoError(t, err)
}

func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	m := newMutex(t, srv, mutex.Config{}, noRetry)
	var log errLog
	impl := &health{check: func(ctx context.Context, _ *healthpb.HealthCheckRequest) error {
		if grpcmw.LeaseFrom(ctx) != nil {
			return status.Error(codes.Internal, "unexpected lease")
		}
		return nil
	}}
	closed := serve(t, impl, unary(m, byService, log.hook()))
	waiting := serve(t, impl, unary(m, byService, log.hook(), grpcmw.WithWait(time.Second)))
	open := serve(t, impl, unary(m, byService, log.hook(), grpcmw.WithFailOpen()))
	srv.Stop(t)

	for name, c := range map[string]healthpb.HealthClient{"fail fast": closed, "waiting": waiting} {
		_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "a"})
		st := status.Convert(err)
		assert.Equal(t, codes.Unavailable, st.Code(), name)
		assert.Equal(t, "lock service unavailable", st.Message(), name)
		hooked := log.take()
		require.Len(t, hooked, 1, name)
		assert.ErrorIs(t, hooked[0], grpcmw.ErrUnavailable, name)
	}

	_, err := open.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "a"})
	assert.NoError(t, err, "fail open runs the handler without a lease")
	hooked := log.take()
	require.Len(t, hooked, 1)
	assert.ErrorIs(t, hooked[0], grpcmw.ErrUnavailable)

	_, err = open.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "a\x01"})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "bad keys are refused even when failing open")
}

func TestLeaseLossCancelsCall(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		rdb := backend.Client(t)
		m := backendMutex(t, backend, mutex.Config{TTL: 300 * time.Millisecond})
		started := make(chan struct{})
		cause := make(chan error, 1)
		impl := &health{check: func(ctx context.Context, _ *healthpb.HealthCheckRequest) error {
			close(started)
			select {
			case <-ctx.Done():
				cause <- context.Cause(ctx)
				return status.Error(codes.Aborted, "lock lost")
			case <-time.After(20 * time.Second):
				cause <- errors.New("the call's context was not cancelled")
				return nil
			}
		}}
		hooked := make(chan error, 1)
		c := serve(t, impl, unary(m, byService, grpcmw.WithErrorHook(func(_ context.Context, method string, err error) {
			hooked <- fmt.Errorf("%s: %w", method, err)
		})))

		res := check(t, c, "doc")
		recv(t, started, "handler start")
		// Another actor wipes the lock: the next extension finds it gone.
		keys, err := redistest.Keys(t.Context(), rdb, m.Prefix()+"*")
		require.NoError(t, err)
		require.NotEmpty(t, keys)
		for _, k := range keys {
			require.NoError(t, rdb.Del(t.Context(), k).Err())
		}
		assert.ErrorIs(t, recv(t, cause, "cancellation"), mutex.ErrNotHeld)
		assert.Equal(t, codes.Aborted, status.Code(recv(t, res, "answer")), "the handler's own status")
		err = recv(t, hooked, "hook")
		assert.ErrorIs(t, err, mutex.ErrNotHeld)
		assert.Contains(t, err.Error(), healthpb.Health_Check_FullMethodName)
	})
}

func TestHandlerLockingItsOwnKey(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		impl := &health{check: func(ctx context.Context, req *healthpb.HealthCheckRequest) error {
			outer := grpcmw.LeaseFrom(ctx)
			err := mutex.WithLock(ctx, m, req.GetService(), func(ctx context.Context) error {
				if mutex.LeaseFromContext(ctx) != outer {
					return errors.New("WithLock did not join the call's lease")
				}
				return nil
			})
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			if _, err := m.TryLock(ctx, req.GetService()); !errors.Is(err, mutex.ErrReentrant) {
				return status.Errorf(codes.Internal, "TryLock: %v", err)
			}
			return nil
		}}
		// A second interceptor on the same key joins the first one's lease.
		c := serve(t, impl, grpc.ChainUnaryInterceptor(
			grpcmw.UnaryServerInterceptor(m, byService),
			grpcmw.UnaryServerInterceptor(m, byService, grpcmw.WithWait(time.Minute)),
		))
		_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "acct:1"})
		assert.NoError(t, err)
	})
}

func TestHandlerErrorPassesThrough(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		var log errLog
		impl := &health{check: func(context.Context, *healthpb.HealthCheckRequest) error {
			return status.Error(codes.NotFound, "no such service")
		}}
		c := serve(t, impl, unary(m, byService, log.hook()))
		_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "s"})
		st := status.Convert(err)
		assert.Equal(t, codes.NotFound, st.Code())
		assert.Equal(t, "no such service", st.Message())
		assert.Empty(t, log.take(), "a handler error is not a lock error")
		status, err := m.Check(t.Context(), "s")
		require.NoError(t, err)
		assert.Equal(t, mutex.Available, status)
	})
}

func TestSkip(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		lease, err := m.TryLock(t.Context(), "held")
		require.NoError(t, err)
		t.Cleanup(func() { lease.Unlock(context.Background()) })

		c := serve(t, &health{}, unary(m, byService, grpcmw.WithSkip(func(method string) bool {
			return method == healthpb.Health_Check_FullMethodName
		})))
		_, err = c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "held"})
		assert.NoError(t, err)
	})
}

func TestBusyCode(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		lease, err := m.TryLock(t.Context(), "held")
		require.NoError(t, err)
		t.Cleanup(func() { lease.Unlock(context.Background()) })

		c := serve(t, &health{}, unary(m, byService, grpcmw.WithBusyCode(codes.Unavailable)))
		_, err = c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "held"})
		assert.Equal(t, codes.Unavailable, status.Code(err))
		assert.Equal(t, "resource busy", status.Convert(err).Message())
	})
}

func TestSetupErrors(t *testing.T) {
	m := newMutex(t, redistest.Shared(t), mutex.Config{})
	tests := []struct {
		name  string
		key   grpcmw.KeyFunc
		l     mutex.Locker
		extra []grpcmw.Option
		msg   string
	}{
		{"nil Locker", byService, nil, nil, "mutex: invalid argument: nil Locker"},
		{"nil KeyFunc", nil, m, nil, "mutex: invalid argument: nil KeyFunc"},
		{"negative wait", byService, m, []grpcmw.Option{grpcmw.WithWait(-time.Second)},
			"mutex: invalid argument: negative wait -1s"},
		{"busy code OK", byService, m, []grpcmw.Option{grpcmw.WithBusyCode(codes.OK)},
			"mutex: invalid argument: busy code OK is not an error code"},
		{"unknown busy code", byService, m, []grpcmw.Option{grpcmw.WithBusyCode(codes.Code(99))},
			"mutex: invalid argument: busy code Code(99) is not an error code"},
		{"Namespace of nil", grpcmw.Namespace("ns", nil), m, nil, "mutex: invalid argument: nil KeyFunc"},
		{"Locker refusing its setup", byService, badLocker{m}, nil, "mutex: invalid argument: bad option"},
		{"several problems", nil, nil, []grpcmw.Option{grpcmw.WithWait(-time.Second)},
			"mutex: invalid argument: nil Locker\n" +
				"mutex: invalid argument: nil KeyFunc\n" +
				"mutex: invalid argument: negative wait -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log errLog
			opts := append([]grpcmw.Option{log.hook()}, tt.extra...)
			c := serve(t, &health{check: func(context.Context, *healthpb.HealthCheckRequest) error {
				t.Error("handler ran")
				return nil
			}}, unary(tt.l, tt.key, opts...))
			_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "a"})
			st := status.Convert(err)
			assert.Equal(t, codes.Internal, st.Code())
			assert.Equal(t, "lock misconfigured", st.Message())
			hooked := log.take()
			require.Len(t, hooked, 1)
			assert.ErrorIs(t, hooked[0], mutex.ErrInvalid)
			assert.EqualError(t, hooked[0], tt.msg)
		})
	}
}

// badLocker is a Locker whose own configuration is bad.
type badLocker struct{ mutex.Locker }

func (badLocker) TryLock(context.Context, ...string) (mutex.Lease, error) {
	return nil, fmt.Errorf("%w: bad option", mutex.ErrInvalid)
}
