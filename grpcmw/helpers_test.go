package grpcmw_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/distlock/distlock/grpcmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// newMutex returns a Mutex on its own client of srv, closed at cleanup.
func newMutex(t testing.TB, srv *redistest.Server, cfg mutex.Config, mods ...func(*redis.Options)) *mutex.Mutex {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = prefix(t)
	}
	m, err := mutex.New(srv.Client(t, mods...), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// backendMutex returns a Mutex on its own client of b, closed at cleanup.
func backendMutex(t testing.TB, b redistest.Backend, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = prefix(t)
	}
	m, err := mutex.New(b.Client(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// noRetry configures a client for a server that the test stops: no retries,
// and a pool large enough that go-redis never starts its background
// re-dialer, which would outlive the test.
func noRetry(o *redis.Options) {
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.PoolSize = 1000
}

// newProxiedMutex returns a Mutex whose client reaches srv through a proxy,
// and the proxy. The client uses go-redis defaults changed by mods, and is
// connected before newProxiedMutex returns, so that a Pause of the proxy
// stalls a Redis call in flight rather than a dial.
func newProxiedMutex(t testing.TB, srv *redistest.Server, cfg mutex.Config, mods ...func(*redis.Options)) (*mutex.Mutex, *redistest.Proxy) {
	t.Helper()
	client, p := redistest.ProxiedClient(t, srv, mods...)
	if cfg.Prefix == "" {
		cfg.Prefix = prefix(t)
	}
	m, err := mutex.New(client, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, p
}

// prefix returns a key prefix unique to the test.
func prefix(t testing.TB) string {
	return "grpcmw:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}

// health implements the gRPC health service with test functions: Check is
// the unary call, Watch the server stream.
type health struct {
	healthpb.UnimplementedHealthServer
	check func(ctx context.Context, req *healthpb.HealthCheckRequest) error
	watch func(req *healthpb.HealthCheckRequest, ss healthpb.Health_WatchServer) error
}

func (h *health) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if h.check != nil {
		if err := h.check(ctx, req); err != nil {
			return nil, err
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (h *health) Watch(req *healthpb.HealthCheckRequest, ss healthpb.Health_WatchServer) error {
	if h.watch != nil {
		if err := h.watch(req, ss); err != nil {
			return err
		}
	}
	return ss.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

// serve starts a gRPC server for impl on 127.0.0.1:0 and returns a client
// of it. Both are stopped at cleanup.
func serve(t testing.TB, impl healthpb.HealthServer, opts ...grpc.ServerOption) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s, impl)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// unary returns server options installing the unary interceptor.
func unary(l mutex.Locker, key grpcmw.KeyFunc, opts ...grpcmw.Option) grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptor(l, key, opts...))
}

// byService is the key of a health call: its service name.
var byService = grpcmw.FromRequest(func(r *healthpb.HealthCheckRequest) string { return r.GetService() })

// check calls Check for service from a goroutine; the error arrives on the
// returned channel. The goroutine ends with the test's context.
func check(t testing.TB, c healthpb.HealthClient, service string) <-chan error {
	t.Helper()
	ch := make(chan error, 1)
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		ch <- err
	}()
	return ch
}

// recv waits for a value on ch, failing the test after a generous bound.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// errLog collects the errors passed to an error hook.
type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errLog) hook() grpcmw.Option {
	return grpcmw.WithErrorHook(func(_ context.Context, _ string, err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.errs = append(l.errs, err)
	})
}

// take returns the errors collected so far and forgets them.
func (l *errLog) take() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := l.errs
	l.errs = nil
	return errs
}
