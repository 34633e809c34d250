package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/distlock/distlock/election"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

const (
	replicas = 3
	job      = "nightly-report"
	prefix   = "example-election"
	every    = 50 * time.Millisecond // the job's period
	runs     = 3                     // runs of the job per leader
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

// replica is one process of the service: its own client, Mutex and
// Election, sharing only Redis.
type replica struct {
	name   string
	e      *election.Election
	cancel context.CancelFunc
	done   chan error
	close  func()
}

func newReplica(redisURL, name string) (*replica, error) {
	client, err := redisurl.Open(redisURL)
	if err != nil {
		return nil, err
	}
	m, err := mutex.New(client, mutex.Config{Prefix: prefix, TTL: 2 * time.Second})
	if err != nil {
		client.Close()
		return nil, err
	}
	e, err := election.New(m, client, election.Config{Prefix: prefix})
	if err != nil {
		m.Close()
		client.Close()
		return nil, err
	}
	return &replica{name: name, e: e, done: make(chan error, 1), close: func() {
		e.Close()
		m.Close()
		client.Close()
	}}, nil
}

func run(ctx context.Context, redisURL string, out io.Writer) error {
	var (
		mu      sync.Mutex // serializes output
		running atomic.Int32
		ran     = make(chan string, 16)
	)
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}

	var rs []*replica
	for i := range replicas {
		r, err := newReplica(redisURL, fmt.Sprintf("replica-%d", i+1))
		if err != nil {
			return err
		}
		defer r.close()
		rs = append(rs, r)
	}

	// Observe the leader from the first replica, as a dashboard would.
	octx, stopObserving := context.WithCancel(ctx)
	observed := rs[0].e.Observe(octx, job)
	var owg sync.WaitGroup
	owg.Go(func() {
		for l := range observed {
			say("leader: %s (fence %d)", l.Value, l.Fence)
		}
	})
	defer owg.Wait()
	defer stopObserving()

	for _, r := range rs {
		rctx, cancel := context.WithCancel(ctx)
		r.cancel = cancel
		go func() {
			// Run campaigns, runs the job while this replica leads, and
			// campaigns again if the term is lost.
			r.done <- election.Run(rctx, r.e, job, r.name, func(ctx context.Context) error {
				term := mutex.LeaseFromContext(ctx)
				tick := time.NewTicker(every)
				defer tick.Stop()
				for {
					select {
					case <-ctx.Done():
						return nil
					case <-tick.C:
					}
					if running.Add(1) != 1 {
						return errors.New("two replicas run the job at once")
					}
					// The job would pass term.Fence() to the storage it
					// writes, so that a deposed leader's writes fail.
					_ = term.Fence()
					running.Add(-1)
					ran <- r.name
				}
			})
		}()
	}

	// Let each leader run the job a few times, then stop it: another
	// replica takes over at once.
	stopped := make(map[string]bool)
	for range replicas {
		leader := ""
		for range runs {
			select {
			case leader = <-ran:
			case <-time.After(10 * time.Second):
				return errors.New("the job did not run")
			}
			say("%s ran the job", leader)
		}
		for _, r := range rs {
			if r.name == leader && !stopped[r.name] {
				say("%s stops", r.name)
				stopped[r.name] = true
				r.cancel()
				if err := <-r.done; err != nil && !errors.Is(err, context.Canceled) {
					return err
				}
			}
		}
	}
	return nil
}
