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

// Wait briefly for the lock, then work as long as it takes: the wait is
// bounded by its own duration, the work only by the caller's context and
// the lease, which is extended meanwhile.
func ExampleWithLockWait() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-withlockwait", TTL: 500 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	err = mutex.WithLockWait(ctx, m, 250*time.Millisecond, "report:2026-11", func(ctx context.Context) error {
		// Two TTLs of work, four times the wait: the lease is extended.
		time.Sleep(time.Second)
		fmt.Println("report built, lock still held:", mutex.LeaseFromContext(ctx).Err() == nil)
		return nil
	})
	fmt.Println("done:", err)

	// Another holder keeps the next report: give up after the wait.
	held, err := m.TryLock(ctx, "report:2026-12")
	if err != nil {
		panic(err)
	}
	defer held.Unlock(ctx)
	err = mutex.WithLockWait(ctx, m, 250*time.Millisecond, "report:2026-12", func(ctx context.Context) error {
		fmt.Println("not printed")
		return nil
	})
	if errors.Is(err, mutex.ErrNotObtained) && ctx.Err() == nil {
		fmt.Println("busy, try later:", err)
	}
	// Output:
	// report built, lock still held: true
	// done: <nil>
	// busy, try later: mutex: not obtained: "report:2026-12" is held: context deadline exceeded
}
