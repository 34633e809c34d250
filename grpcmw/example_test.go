package grpcmw_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/distlock/distlock/grpcmw"
	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

// checker is a health service whose Check reports the lease of the call.
type checker struct {
	healthpb.UnimplementedHealthServer
}

func (checker) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	fmt.Println("checking under", grpcmw.LeaseFrom(ctx).Keys())
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func ExampleUnaryServerInterceptor() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-grpcmw"})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// Calls are serialized by the service name of their request.
	key := grpcmw.Namespace("service", grpcmw.FromRequest(func(r *healthpb.HealthCheckRequest) string {
		return r.GetService()
	}))
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptor(m, key)))
	healthpb.RegisterHealthServer(srv, checker{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	defer func() { srv.Stop(); <-done }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	ctx := context.Background()

	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "billing"})
	fmt.Println(resp.GetStatus(), err)

	// While another replica holds the key, the call is aborted at once.
	lease, err := m.TryLock(ctx, "service:billing")
	if err != nil {
		panic(err)
	}
	_, err = c.Check(ctx, &healthpb.HealthCheckRequest{Service: "billing"})
	fmt.Println(status.Code(err), status.Convert(err).Message())
	_ = lease.Unlock(ctx)
	// Output:
	// checking under [service:billing]
	// SERVING <nil>
	// Aborted resource busy
}

func ExampleMetadata() {
	key := grpcmw.Namespace("tenant", grpcmw.Metadata("x-tenant"))
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-tenant", "acme"))
	fmt.Println(key(ctx, "/shop.Orders/Watch", nil))
	// Output: tenant:acme true <nil>
}

func ExampleFromRequest() {
	key := grpcmw.FromRequest(func(r *healthpb.HealthCheckRequest) string { return r.GetService() })
	fmt.Println(key(context.Background(), "/grpc.health.v1.Health/Check", &healthpb.HealthCheckRequest{Service: "billing"}))
	// Other request types are not serialized.
	fmt.Println(key(context.Background(), "/grpc.health.v1.Health/List", &healthpb.HealthListRequest{}))
	// Output:
	// billing true <nil>
	//  false <nil>
}

func ExampleKeyedFromRequest() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-grpcmw-keyed"})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// Accounts are numbers: "042" and "42" are the same account, and so the
	// same lock, the one accounts.Lock(ctx, 42) takes.
	accounts := keyed.New[int64](m, "account")
	key := grpcmw.KeyedFromRequest(accounts, func(r *healthpb.HealthCheckRequest) (int64, error) {
		return strconv.ParseInt(r.GetService(), 10, 64)
	})
	ctx := context.Background()
	const method = "/grpc.health.v1.Health/Check"
	fmt.Println(key(ctx, method, &healthpb.HealthCheckRequest{Service: "042"}))
	fmt.Println(key(ctx, method, &healthpb.HealthCheckRequest{Service: "42"}))
	_, _, err = key(ctx, method, &healthpb.HealthCheckRequest{Service: "abc"})
	fmt.Println(err)
	// Output:
	// account:42 true <nil>
	// account:42 true <nil>
	// grpcmw: invalid lock key: request: strconv.ParseInt: parsing "abc": invalid syntax
}
