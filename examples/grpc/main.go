package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/distlock/distlock/grpcmw"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

const (
	prefix          = "example-grpc"
	incrementMethod = "/counter.Counter/Increment"
)

func main() {
	callName := flag.String("call", "", "increment this counter on the server at ADDR and exit")
	flag.Parse()
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	if *callName != "" {
		n, err := call(ctx, addr, *callName)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(n)
		return
	}

	// REDIS_URL names the Redis to use, in any form redisurl.Open accepts;
	// without it, the example runs an embedded, in-memory Redis.
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			log.Fatal(err)
		}
		defer mr.Close()
		redisURL = "redis://" + mr.Addr()
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("serving counter.Counter on %s", lis.Addr())
	if err := run(ctx, lis, redisURL); err != nil {
		log.Fatal(err)
	}
}

// run serves the counter service on lis until ctx ends, then stops
// gracefully and returns.
func run(ctx context.Context, lis net.Listener, redisURL string) error {
	rdb, err := redisurl.Open(redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	m, err := mutex.New(rdb, mutex.Config{Prefix: prefix})
	if err != nil {
		return err
	}
	defer m.Close()

	srv := newServer(m, &counters{rdb: rdb})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
		<-stopped
	}
	return <-errc
}

// newServer returns the gRPC server. Increments wait up to 5 seconds for
// their counter and fail with Aborted beyond that.
func newServer(m *mutex.Mutex, c *counters) *grpc.Server {
	key := grpcmw.Namespace("counter", grpcmw.FromRequest(func(r *wrapperspb.StringValue) string {
		return r.GetValue()
	}))
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptor(m, key,
		grpcmw.WithWait(5*time.Second),
		grpcmw.WithErrorHook(func(_ context.Context, method string, err error) {
			log.Printf("%s: %v", method, err)
		}))))
	srv.RegisterService(&counterDesc, c)
	return srv
}

// counterServer is the service interface of counterDesc.
type counterServer interface {
	Increment(ctx context.Context, name *wrapperspb.StringValue) (*wrapperspb.Int64Value, error)
}

// counterDesc declares counter.Counter by hand, as protoc-gen-go-grpc would.
var counterDesc = grpc.ServiceDesc{
	ServiceName: "counter.Counter",
	HandlerType: (*counterServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Increment",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			handler := func(ctx context.Context, req any) (any, error) {
				return srv.(counterServer).Increment(ctx, req.(*wrapperspb.StringValue))
			}
			if interceptor == nil {
				return handler(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: incrementMethod}, handler)
		},
	}},
}

// counters keeps one counter per name in a Redis hash, with the fencing
// token of its last write.
type counters struct {
	rdb redis.UniversalClient
}

var _ counterServer = (*counters)(nil)

// fencedWrite sets the value unless a write with a newer fencing token was
// accepted already.
var fencedWrite = redis.NewScript(`
local last = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if tonumber(ARGV[2]) <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'fence', ARGV[2])
return 1
`)

func counterKey(name string) string { return prefix + ":counter:" + name }

// Increment runs under the counter's lock: read, add one, write back.
func (c *counters) Increment(ctx context.Context, name *wrapperspb.StringValue) (*wrapperspb.Int64Value, error) {
	key := counterKey(name.GetValue())
	n, err := c.rdb.HGet(ctx, key, "value").Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, status.Error(codes.Unavailable, "store unavailable")
	}
	fence := grpcmw.LeaseFrom(ctx).Fence()
	ok, err := fencedWrite.Run(ctx, c.rdb, []string{key}, n+1, fence).Bool()
	switch {
	case err != nil && ctx.Err() != nil:
		// The lease was lost (or the client left) before the write
		// completed: it may or may not have happened.
		return nil, status.Error(codes.Aborted, "lock lost, retry")
	case err != nil:
		return nil, status.Error(codes.Unavailable, "store unavailable")
	case !ok:
		return nil, status.Error(codes.Aborted, "stale write refused, retry")
	}
	return wrapperspb.Int64(n + 1), nil
}

// call increments counter name on the server at addr.
func call(ctx context.Context, addr, name string) (int64, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return increment(ctx, conn, name)
}

// increment calls counter.Counter/Increment on conn.
func increment(ctx context.Context, conn *grpc.ClientConn, name string) (int64, error) {
	out := new(wrapperspb.Int64Value)
	if err := conn.Invoke(ctx, incrementMethod, wrapperspb.String(name), out); err != nil {
		return 0, err
	}
	return out.GetValue(), nil
}
