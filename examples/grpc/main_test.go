package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// replicas starts n instances of the service on 127.0.0.1:0, all on redisURL,
// and returns a client connection to each. They are stopped, and run must
// have returned nil, at cleanup.
func replicas(t *testing.T, n int, redisURL string) []*grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	conns := make([]*grpc.ClientConn, n)
	errs := make([]error, n)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		}
	})
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { errs[i] = run(ctx, lis, redisURL) })
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns[i] = conn
	}
	return conns
}

// increments sends perCounter increments to each counter, all at once,
// spread over the replicas, and checks that none was lost.
func increments(t *testing.T, conns []*grpc.ClientConn, names []string, perCounter int) {
	var wg sync.WaitGroup
	for i := range perCounter * len(names) {
		wg.Go(func() {
			if _, err := increment(t.Context(), conns[i%len(conns)], names[i%len(names)]); err != nil {
				t.Errorf("increment %s: %v", names[i%len(names)], err)
			}
		})
	}
	wg.Wait()
	for _, name := range names {
		n, err := increment(t.Context(), conns[0], name)
		if err != nil || n != int64(perCounter+1) {
			t.Errorf("counter %s after one more increment: %d, %v; want %d", name, n, err, perCounter+1)
		}
	}
}

func TestConcurrentIncrementsAcrossReplicas(t *testing.T) {
	srv := redistest.Shared(t)
	redisURL := srv.URL()
	rdb := srv.Client(t)
	names := []string{"visits", "orders", "signups"}
	t.Cleanup(func() {
		for _, name := range names {
			rdb.Del(context.Background(), counterKey(name))
		}
	})
	increments(t, replicas(t, 3, redisURL), names, 20)

	// Every lock was released: only the counters are left.
	keys, err := rdb.Keys(t.Context(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix+":counter:") {
			t.Errorf("key left in Redis: %q", k)
		}
	}
}

func TestBadNames(t *testing.T) {
	redisURL := redistest.Shared(t).URL()
	conn := replicas(t, 1, redisURL)[0]
	for name, msg := range map[string]string{
		"":                       "missing lock key",
		"a\nb":                   "invalid lock key",
		strings.Repeat("x", 300): "invalid lock key",
	} {
		_, err := increment(t.Context(), conn, name)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || st.Message() != msg {
			t.Errorf("increment %q: %v, want InvalidArgument %q", name, err, msg)
		}
	}
}

func TestEmbeddedRedis(t *testing.T) {
	redisURL := "redis://" + miniredis.RunT(t).Addr()
	increments(t, replicas(t, 2, redisURL), []string{"a", "b"}, 5)
}

func TestClientMode(t *testing.T) {
	redisURL := "redis://" + miniredis.RunT(t).Addr()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, lis, redisURL) }()
	for want := int64(1); want <= 2; want++ {
		n, err := call(t.Context(), lis.Addr().String(), "c")
		if err != nil || n != want {
			t.Errorf("call: %d, %v; want %d", n, err, want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal(fmt.Errorf("run did not return after its context ended"))
	}
}
