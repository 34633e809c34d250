package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/examples/internal/redisurl"
	"github.com/distlock/distlock/mutex"
)

func main() {
	opts, stop, err := redisurl.Options(os.Getenv("REDIS_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	if err := run(context.Background(), opts, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, opts *redis.Options, out io.Writer) error {
	client := redis.NewClient(opts)
	defer client.Close()

	m, err := mutex.New(client, mutex.Config{Prefix: "quickstart", TTL: 5 * time.Second})
	if err != nil {
		return err
	}
	defer m.Close()

	lease, err := m.Lock(ctx, "report:2026")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "locked %v (fence %d)\n", lease.Keys(), lease.Fence())

	// Another worker cannot take the key while we hold it.
	if _, err := m.TryLock(ctx, "report:2026"); err != nil {
		fmt.Fprintf(out, "second attempt: %v\n", err)
	}

	// Long work keeps the lease alive with Extend.
	if err := lease.Extend(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "extended")

	if err := lease.Unlock(ctx); err != nil {
		return err
	}
	status, err := m.Check(ctx, "report:2026")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "unlocked, key is now %v\n", status)
	return nil
}
