package registry_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
	"github.com/distlock/distlock/registry"
)

func Example() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()

	reg := registry.New()
	defer reg.Close()
	err = reg.Register("orders", client, mutex.Config{Prefix: "example-registry", TTL: 5 * time.Second},
		middleware.Retry(), middleware.AutoExtend())
	if err != nil {
		panic(err)
	}

	// Elsewhere in the program: the same Locker, by name.
	orders, err := reg.Get("orders")
	if err != nil {
		panic(err)
	}
	err = mutex.WithLock(context.Background(), orders, "order:42", func(ctx context.Context) error {
		fmt.Println("holding", mutex.LeaseFromContext(ctx).Keys())
		return nil
	})
	fmt.Println("done:", err)

	_, err = reg.Get("invoices")
	fmt.Println(err)
	// Output:
	// holding [order:42]
	// done: <nil>
	// registry: unknown lock configuration "invoices"
}

func ExampleRegistry_Inherit() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()

	reg := registry.New()
	defer reg.Close()
	if err := reg.Register("jobs", client, mutex.Config{Prefix: "example-jobs", TTL: 5 * time.Second}); err != nil {
		panic(err)
	}
	// Same client and TTL, in strict arrival order under a prefix of its own.
	err = reg.Inherit("jobs-fifo", "jobs", func(c *mutex.Config) {
		c.Prefix = "example-jobs-fifo"
		c.FIFO = true
	})
	if err != nil {
		panic(err)
	}

	fifo, err := reg.Get("jobs-fifo")
	if err != nil {
		panic(err)
	}
	m := fifo.(*mutex.Mutex) // no decorators: the Mutex itself
	fmt.Println(m.Prefix(), m.TTL(), m.FIFO())
	// Output:
	// example-jobs-fifo 5s true
}

func ExampleRegistry_RegisterFunc() {
	reg := registry.New()
	defer reg.Close()

	// The factory runs on the first Get, once: here, the Redis URL is read
	// only when a lock is first needed.
	err := reg.RegisterFunc("reports", func(ctx context.Context) (mutex.Locker, error) {
		client, err := redisurl.Open(os.Getenv("REDIS_URL"))
		if err != nil {
			return nil, err
		}
		m, err := mutex.New(client, mutex.Config{Prefix: "example-reports"})
		if err != nil {
			return nil, errors.Join(err, client.Close())
		}
		return &ownedClient{Mutex: m, close: client.Close}, nil
	})
	if err != nil {
		panic(err)
	}

	reports, err := reg.Get("reports")
	if err != nil {
		panic(err)
	}
	status, err := reports.Check(context.Background(), "daily")
	fmt.Println(status, err)
	// Output:
	// available <nil>
}

// ownedClient is a Mutex that closes its client after itself, so that the
// Registry's Close releases both.
type ownedClient struct {
	*mutex.Mutex
	close func() error
}

func (o *ownedClient) Close() error {
	return errors.Join(o.Mutex.Close(), o.close())
}
