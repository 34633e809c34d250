package election_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/election"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
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
	m, _ := mutex.New(client, mutex.Config{Prefix: "example-election", TTL: 5 * time.Second})
	defer m.Close()
	e, err := election.New(m, client, election.Config{Prefix: "example-election"})
	if err != nil {
		panic(err)
	}
	defer e.Close()
	ctx := context.Background()

	term, err := e.Campaign(ctx, "nightly-report", "host-a")
	if err != nil {
		panic(err)
	}
	leader, _ := e.Leader(ctx, "nightly-report")
	fmt.Println("leader:", leader.Value, leader.Fence == term.Fence())
	// ... run the job while term.Done() is open, passing term.Fence() on.
	_ = term.Resign(ctx)
	_, err = e.Leader(ctx, "nightly-report")
	fmt.Println(errors.Is(err, election.ErrNoLeader))
	// Output:
	// leader: host-a true
	// true
}

func ExampleElection_Observe() {
	client := exampleClient()
	defer client.Close()
	m, _ := mutex.New(client, mutex.Config{Prefix: "example-election"})
	defer m.Close()
	e, _ := election.New(m, client, election.Config{Prefix: "example-election"})
	defer e.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	leaders := e.Observe(ctx, "scheduler")
	for _, host := range []string{"host-a", "host-b"} {
		term, _ := e.Campaign(ctx, "scheduler", host)
		fmt.Println("observed", (<-leaders).Value)
		_ = term.Resign(ctx)
	}
	// Output:
	// observed host-a
	// observed host-b
}

func ExampleRun() {
	client := exampleClient()
	defer client.Close()
	m, _ := mutex.New(client, mutex.Config{Prefix: "example-election"})
	defer m.Close()
	e, _ := election.New(m, client, election.Config{Prefix: "example-election"})
	defer e.Close()

	err := election.Run(context.Background(), e, "compactor", "host-a", func(ctx context.Context) error {
		// ctx is cancelled if the term is lost; the term is in ctx.
		fmt.Println("leading with a fence:", mutex.LeaseFromContext(ctx).Fence() > 0)
		return nil // done: Run resigns
	})
	fmt.Println(err)
	// Output:
	// leading with a fence: true
	// <nil>
}
