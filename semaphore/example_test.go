package semaphore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
	"github.com/distlock/distlock/semaphore"
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
	sem, err := semaphore.New(client, semaphore.Config{Prefix: "example-sem", Permits: 2, TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	defer sem.Close()
	ctx := context.Background()

	a, _ := sem.Lock(ctx, "exports")
	b, _ := sem.Lock(ctx, "exports")
	st, _ := sem.Check(ctx, "exports")
	fmt.Println("two permits held:", st)
	_, err = sem.TryLock(ctx, "exports")
	fmt.Println("third:", errors.Is(err, mutex.ErrNotObtained))
	_ = a.Unlock(ctx)
	st, _ = sem.Check(ctx, "exports")
	fmt.Println("one permit held:", st)
	_ = b.Unlock(ctx)
	// Output:
	// two permits held: locked
	// third: true
	// one permit held: available
}

// The decorators and helpers of the other packages take a Semaphore as
// they take a Mutex.
func Example_withLock() {
	client := exampleClient()
	defer client.Close()
	sem, _ := semaphore.New(client, semaphore.Config{Prefix: "example-sem", Permits: 4})
	defer sem.Close()
	locker := middleware.Chain(sem, middleware.Retry(), middleware.AutoExtend())

	err := mutex.WithLock(context.Background(), locker, "partner-api", func(ctx context.Context) error {
		fmt.Println("calling the partner API, at most 4 at once")
		return nil
	})
	fmt.Println(err)
	// Output:
	// calling the partner API, at most 4 at once
	// <nil>
}

// In FIFO mode, permits go in the order the Lock calls reached Redis.
func Example_fifo() {
	client := exampleClient()
	defer client.Close()
	sem, _ := semaphore.New(client, semaphore.Config{Prefix: "example-sem-fifo", Permits: 1, FIFO: true})
	defer sem.Close()
	ctx := context.Background()

	held, _ := sem.Lock(ctx, "k")
	order := make(chan string, 2)
	for i, name := range []string{"first", "second"} {
		go func() {
			l, _ := sem.Lock(ctx, "k")
			order <- name
			_ = l.Unlock(ctx)
		}()
		// Wait until this waiter is queued before the next one comes.
		for n := 0; n <= i; n = queued(client, "example-sem-fifo", "k") {
			time.Sleep(time.Millisecond)
		}
	}
	_ = held.Unlock(ctx)
	fmt.Println(<-order, <-order)
	// Output: first second
}

// queued returns the number of Lock calls waiting for key in FIFO mode.
func queued(client redis.UniversalClient, prefix, key string) int {
	n, _ := client.ZCard(context.Background(), prefix+":{"+key+"}:q").Result()
	return int(n)
}
