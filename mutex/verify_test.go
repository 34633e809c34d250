package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

func TestVerify(t *testing.T) {
	ctx := t.Context()
	safe := redistest.Shared(t)
	m := newMutex(t, safe, mutex.Config{Prefix: prefix(t)})
	if err := m.Verify(ctx); err != nil {
		t.Fatalf("default server reported: %v", err)
	}

	evicting := redistest.Start(t, redistest.WithArgs("--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"))
	m = newMutex(t, evicting, mutex.Config{Prefix: prefix(t)})
	err := m.Verify(ctx)
	if !errors.Is(err, mutex.ErrUnsafeServer) || !strings.Contains(err.Error(), evicting.Addr()+": maxmemory-policy volatile-lru") {
		t.Fatalf("evicting server: got %v", err)
	}

	evicting.Stop(t)
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err = m.Verify(short)
	if err == nil || errors.Is(err, mutex.ErrUnsafeServer) {
		t.Fatalf("unreachable server: want an error that is not ErrUnsafeServer, got %v", err)
	}
}

func ExampleMutex_Verify() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example"})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	// Once at start-up: a server that can evict held locks is refused.
	if err := m.Verify(context.Background()); errors.Is(err, mutex.ErrUnsafeServer) {
		fmt.Println("refusing to run:", err)
		return
	} else if err != nil {
		fmt.Println("cannot check Redis:", err)
		return
	}
	fmt.Println("server is safe for locks")
	// Output: server is safe for locks
}

// On a Cluster, Verify asks every primary and names the one that can evict.
func TestVerifyCluster(t *testing.T) {
	ctx := t.Context()
	cluster := redistest.StartCluster(t)
	m, err := mutex.New(cluster.Client(t), mutex.Config{Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Verify(ctx); err != nil {
		t.Fatalf("default cluster reported: %v", err)
	}
	primary := cluster.Primaries(t)[1]
	c := primary.Client(t)
	if err := c.ConfigSet(ctx, "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "allkeys-lfu").Err(); err != nil {
		t.Fatal(err)
	}
	err = m.Verify(ctx)
	if !errors.Is(err, mutex.ErrUnsafeServer) || !strings.Contains(err.Error(), primary.Addr()+": maxmemory-policy allkeys-lfu") {
		t.Fatalf("evicting primary: got %v", err)
	}
	if n := strings.Count(err.Error(), "mutex: unsafe server"); n != 1 {
		t.Errorf("want one primary reported, got %d: %v", n, err)
	}
}
