package grpcmw_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/distlock/distlock/grpcmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// TestLoad sends 200 concurrent calls over 10 keys to 3 servers sharing one
// Redis, half unary and half streams: every call completes, and no two
// handlers of one key ever run at once.
func TestLoad(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		const calls, keys, servers = 200, 10, 3
		var (
			mu       sync.Mutex
			inside   = map[string]*atomic.Int32{}
			done     = map[string]int{}
			overlaps atomic.Int64
		)
		enter := func(key string) {
			mu.Lock()
			c := inside[key]
			if c == nil {
				c = new(atomic.Int32)
				inside[key] = c
			}
			mu.Unlock()
			if c.Add(1) > 1 {
				overlaps.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
			c.Add(-1)
			mu.Lock()
			done[key]++
			mu.Unlock()
		}
		impl := &health{
			check: func(_ context.Context, req *healthpb.HealthCheckRequest) error {
				enter(req.GetService())
				return nil
			},
			watch: func(_ *healthpb.HealthCheckRequest, ss healthpb.Health_WatchServer) error {
				md, _ := metadata.FromIncomingContext(ss.Context())
				enter(md.Get("x-key")[0])
				return nil
			},
		}
		// Unary calls and streams of one key share the lock: the unary key
		// comes from the request, the stream key from the metadata.
		clients := make([]healthpb.HealthClient, servers)
		for i := range clients {
			m := backendMutex(t, backend, mutex.Config{Prefix: prefix(t)})
			clients[i] = serve(t, impl,
				unary(m, byService, grpcmw.WithWait(time.Minute)),
				grpc.ChainStreamInterceptor(grpcmw.StreamServerInterceptor(m, grpcmw.Metadata("x-key"), grpcmw.WithWait(time.Minute))))
		}

		var wg sync.WaitGroup
		errs := make(chan error, calls)
		for i := range calls {
			wg.Go(func() {
				c, key := clients[i%servers], fmt.Sprintf("k%d", i%keys)
				if i%2 == 0 {
					_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: key})
					errs <- err
					return
				}
				ctx := metadata.AppendToOutgoingContext(t.Context(), "x-key", key)
				ss, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = ss.Recv()
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			assert.NoError(t, err, "code %v", status.Code(err))
		}
		assert.Zero(t, overlaps.Load(), "handlers of one key overlapped")
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, done, keys)
		for key, n := range done {
			assert.Equal(t, calls/keys, n, key)
		}
	})
}
