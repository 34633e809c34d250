package rwmutex_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
	"github.com/distlock/distlock/rwmutex"
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
	rw, err := rwmutex.New(client, rwmutex.Config{Prefix: "example-rw", TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	defer rw.Close()
	ctx := context.Background()

	r1, _ := rw.Reader().Lock(ctx, "catalog")
	r2, _ := rw.Reader().Lock(ctx, "catalog")
	fmt.Println("two readers share the key")
	_, err = rw.Writer().TryLock(ctx, "catalog")
	fmt.Println("writer while readers hold it:", errors.Is(err, mutex.ErrNotObtained))
	_ = r1.Unlock(ctx)
	_ = r2.Unlock(ctx)

	w, _ := rw.Writer().Lock(ctx, "catalog")
	_, err = rw.Reader().TryLock(ctx, "catalog")
	fmt.Println("reader while the writer holds it:", errors.Is(err, mutex.ErrNotObtained))
	fmt.Println("writer's fence above the readers':", w.Fence() > r2.Fence())
	_ = w.Unlock(ctx)
	// Output:
	// two readers share the key
	// writer while readers hold it: true
	// reader while the writer holds it: true
	// writer's fence above the readers': true
}

// WithLock takes either side, as it takes a Mutex.
func ExampleRWMutex_Writer() {
	client := exampleClient()
	defer client.Close()
	rw, _ := rwmutex.New(client, rwmutex.Config{Prefix: "example-rw"})
	defer rw.Close()

	err := mutex.WithLock(context.Background(), rw.Writer(), "catalog", func(ctx context.Context) error {
		lease := mutex.LeaseFromContext(ctx)
		fmt.Println("rebuilding the catalog; fence given:", lease.Fence() > 0)
		return nil
	})
	fmt.Println(err)
	// Output:
	// rebuilding the catalog; fence given: true
	// <nil>
}
