package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
	"github.com/distlock/distlock/semaphore"
)

const (
	replicas = 3
	workers  = 4 // per replica
	calls    = 3 // per worker
	limit    = 2 // concurrent calls the API allows
	prefix   = "example-semaphore"
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

// api stands for the external API: it counts the calls in progress and
// records the most it saw at once.
type api struct {
	inFlight, most, total atomic.Int64
}

func (a *api) call(ctx context.Context) error {
	n := a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	for {
		m := a.most.Load()
		if n <= m || a.most.CompareAndSwap(m, n) {
			break
		}
	}
	a.total.Add(1)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(20 * time.Millisecond):
		return nil
	}
}

func run(ctx context.Context, redisURL string, out io.Writer) error {
	var ext api
	var wg sync.WaitGroup
	errs := make(chan error, replicas*workers)
	for r := range replicas {
		// Each replica is a process of its own: its own client and
		// Semaphore, sharing only Redis.
		client, err := redisurl.Open(redisURL)
		if err != nil {
			return err
		}
		defer client.Close()
		sem, err := semaphore.New(client, semaphore.Config{Prefix: prefix, Permits: limit, TTL: 5 * time.Second})
		if err != nil {
			return err
		}
		defer sem.Close()
		// Retries ride out Redis hiccups; the permit is kept extended
		// while a call lasts.
		locker := middleware.Chain(sem, middleware.Retry(), middleware.AutoExtend())
		for w := range workers {
			wg.Go(func() {
				for range calls {
					err := mutex.WithLock(ctx, locker, "partner-api", ext.call)
					if err != nil {
						errs <- fmt.Errorf("replica %d worker %d: %w", r, w, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	fmt.Fprintf(out, "%d replicas with %d workers each made %d calls\n", replicas, workers, ext.total.Load())
	fmt.Fprintf(out, "at most %d calls at once (limit %d)\n", ext.most.Load(), limit)
	return nil
}
