package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

func ExampleWithLock() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-withlock", TTL: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// The lease is extended while the function runs, and released after it.
	err = mutex.WithLock(context.Background(), m, "report:2026-11", func(ctx context.Context) error {
		// ctx is cancelled if the lease is lost; context.Cause(ctx) says why.
		fmt.Println("building the report")
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// building the report
	// done: <nil>
}

func ExampleWithLock_reentrant() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-reentrant"})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	chargeAccount := func(ctx context.Context, id string) error {
		// Called on its own it locks the account; called under a lock on the
		// account it joins that lock instead of waiting for itself.
		return mutex.WithLock(ctx, m, "account:"+id, func(ctx context.Context) error {
			fmt.Println("charging", id)
			return nil
		})
	}
	err = mutex.WithLock(context.Background(), m, "account:7", func(ctx context.Context) error {
		if err := chargeAccount(ctx, "7"); err != nil {
			return err
		}
		// A direct Lock of a held key fails at once.
		_, err := m.Lock(ctx, "account:7")
		fmt.Println(errors.Is(err, mutex.ErrReentrant))
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// charging 7
	// true
	// done: <nil>
}

func ExampleRunLocked() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-runlocked"})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	// A caller that decides how to obtain the lease (here TryLock, failing
	// fast on contention) hands it to RunLocked for the rest.
	lease, err := m.TryLock(ctx, "job:nightly")
	if errors.Is(err, mutex.ErrNotObtained) {
		fmt.Println("another instance runs the job")
		return
	} else if err != nil {
		panic(err)
	}
	err = mutex.RunLocked(ctx, m, lease, func(ctx context.Context) error {
		fmt.Println("running the job with fence", lease.Fence() > 0)
		return nil
	})
	fmt.Println("done:", err, lease.Err())
	// Output:
	// running the job with fence true
	// done: <nil> mutex: lease released
}
