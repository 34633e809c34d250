package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

func main() {
	// REDIS_URL names the Redis to use, in any form redisurl.Open accepts;
	// without it, the example runs an embedded, in-memory Redis.
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			log.Fatal(err)
		}
		defer mr.Close()
		redisURL = "redis://" + mr.Addr()
	}
	if err := run(context.Background(), redisURL, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, redisURL string, out io.Writer) error {
	client, err := redisurl.Open(redisURL)
	if err != nil {
		return err
	}
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
