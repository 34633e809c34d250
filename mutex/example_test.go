package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

func exampleClient() redis.UniversalClient {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	return client
}

func Example() {
	client := exampleClient()
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example", TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	lease, err := m.Lock(ctx, "invoice:42")
	if err != nil {
		panic(err)
	}
	fmt.Println("holding", lease.Keys())
	if err := lease.Extend(ctx); err != nil {
		panic(err)
	}
	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}
	fmt.Println(lease.Err())
	// Output:
	// holding [invoice:42]
	// mutex: lease released
}

func ExampleMutex_TryLock() {
	client := exampleClient()
	defer client.Close()
	m, _ := mutex.New(client, mutex.Config{Prefix: "example"})
	defer m.Close()
	ctx := context.Background()

	first, _ := m.TryLock(ctx, "report")
	_, err := m.TryLock(ctx, "report")
	fmt.Println(errors.Is(err, mutex.ErrNotObtained))
	_ = first.Unlock(ctx)
	// Output: true
}

func ExampleMutex_Lock_multipleKeys() {
	client := exampleClient()
	defer client.Close()
	m, _ := mutex.New(client, mutex.Config{Prefix: "example"})
	defer m.Close()
	ctx := context.Background()

	// Move money between two accounts: hold both or neither.
	lease, err := m.Lock(ctx, "account:1", "account:2")
	if err != nil {
		panic(err)
	}
	st, _ := m.Check(ctx, "account:1", "account:3")
	fmt.Println(st)
	_ = lease.Unlock(ctx)
	st, _ = m.Check(ctx, "account:1", "account:2")
	fmt.Println(st)
	// Output:
	// partially locked
	// available
}

func ExampleMutex_Lock_timeout() {
	client := exampleClient()
	defer client.Close()
	m, _ := mutex.New(client, mutex.Config{Prefix: "example"})
	defer m.Close()

	held, _ := m.Lock(context.Background(), "job")
	defer held.Unlock(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := m.Lock(ctx, "job")
	fmt.Println(errors.Is(err, mutex.ErrNotObtained), errors.Is(err, context.DeadlineExceeded))
	// Output: true true
}

func ExampleLease_Fence() {
	client := exampleClient()
	defer client.Close()
	m, _ := mutex.New(client, mutex.Config{Prefix: "example"})
	defer m.Close()
	ctx := context.Background()

	a, _ := m.Lock(ctx, "ledger")
	_ = a.Unlock(ctx)
	b, _ := m.Lock(ctx, "ledger")
	_ = b.Unlock(ctx)
	// The storage behind the lock accepts a write only with a fence higher
	// than the last one it saw.
	fmt.Println(b.Fence() > a.Fence())
	// Output: true
}

func ExampleLease_Done() {
	client := exampleClient()
	defer client.Close()
	m, _ := mutex.New(client, mutex.Config{Prefix: "example", TTL: 50 * time.Millisecond})
	defer m.Close()

	lease, _ := m.Lock(context.Background(), "short")
	<-lease.Done() // no Extend: the validity runs out
	fmt.Println(errors.Is(lease.Err(), mutex.ErrNotHeld))
	// Output: true
}

func ExampleDeadline() {
	client := exampleClient()
	defer client.Close()
	m, _ := mutex.New(client, mutex.Config{Prefix: "example", TTL: 10 * time.Second})
	defer m.Close()
	ctx := context.Background()

	lease, _ := m.Lock(ctx, "deadline")
	defer lease.Unlock(ctx)
	deadline, ok := mutex.Deadline(lease)
	fmt.Println(ok, time.Until(deadline) > 9*time.Second)
	// Output: true true
}
