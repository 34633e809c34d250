package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

func ExampleChain() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-chain", TTL: 3 * time.Second})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// Retry(AutoExtend(m)): acquires are retried on Redis failures, and the
	// lease they return is renewed in the background until Unlock.
	locker := middleware.Chain(m, middleware.Retry(), middleware.AutoExtend())
	err = mutex.WithLock(context.Background(), locker, "invoice:42", func(ctx context.Context) error {
		fmt.Println("auto-extended:", mutex.LeaseFromContext(ctx).(mutex.AutoExtender).AutoExtended())
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// auto-extended: true
	// done: <nil>
}

func ExampleRetry() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-retry", TTL: 200 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	// Poll while the key is held: up to 11 attempts, 50ms apart at first,
	// doubling to at most 1s, with jitter; bsm/redislock's
	// LimitRetry(ExponentialBackoff(50ms, 1s), 10), drawn at random.
	locker := middleware.Retry(
		middleware.WithAttempts(11),
		middleware.WithFactor(2),
		middleware.WithMinDelay(50*time.Millisecond),
		middleware.WithMaxDelay(time.Second),
		middleware.WithJitter(true),
		middleware.WithRetryOnContention(true),
	)(m)

	// Someone holds the key and never unlocks it: it frees up with its TTL.
	if _, err := m.TryLock(ctx, "nightly-job"); err != nil {
		panic(err)
	}
	lease, err := locker.TryLock(ctx, "nightly-job")
	if err != nil {
		panic(err)
	}
	fmt.Println("obtained once the holder's TTL ran out")
	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}

	// Contention past the attempts is reported as such.
	if _, err := m.TryLock(ctx, "busy"); err != nil {
		panic(err)
	}
	_, err = middleware.Retry(middleware.WithAttempts(2), middleware.WithRetryOnContention(true))(m).TryLock(ctx, "busy")
	fmt.Println(errors.Is(err, mutex.ErrNotObtained))
	// Output:
	// obtained once the holder's TTL ran out
	// true
}

func ExampleAutoExtend() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-autoextend", TTL: time.Second})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	// Renew when less than 500ms of validity is left (an
	// automaticExtensionThreshold of 500ms).
	locker := middleware.AutoExtend(middleware.WithThreshold(500 * time.Millisecond))(m)
	lease, err := locker.Lock(ctx, "import:customers")
	if err != nil {
		panic(err)
	}
	time.Sleep(1500 * time.Millisecond) // longer than the TTL
	fmt.Println("still held:", lease.Err() == nil)

	// Unlock stops the renewals.
	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}
	select {
	case <-lease.Done():
		fmt.Println(lease.Err())
	default:
	}
	// Output:
	// still held: true
	// mutex: lease released
}

func ExampleScheduler() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-scheduler", TTL: 3 * time.Second})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	// A Scheduler of its own, with a wider batching window; Close stops it.
	s, err := middleware.NewScheduler(middleware.SchedulerConfig{Window: 50 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	locker := middleware.AutoExtend(middleware.WithScheduler(s))(m)

	var leases []mutex.Lease
	for _, key := range []string{"a", "b", "c"} {
		lease, err := locker.TryLock(ctx, key)
		if err != nil {
			panic(err)
		}
		leases = append(leases, lease)
	}
	fmt.Println("renewing", s.Stats().Leases, "leases")
	for _, lease := range leases {
		if err := lease.Unlock(ctx); err != nil {
			panic(err)
		}
	}
	fmt.Println("renewing", s.Stats().Leases, "leases")
	// Output:
	// renewing 3 leases
	// renewing 0 leases
}
