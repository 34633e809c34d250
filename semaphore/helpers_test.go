package semaphore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/semaphore"
)

// prefix returns a key prefix unique to the test.
func prefix(t testing.TB) string {
	return "t:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}

// newSem returns a Semaphore on client, closed at cleanup.
func newSem(t testing.TB, client redis.UniversalClient, cfg semaphore.Config) *semaphore.Semaphore {
	t.Helper()
	s, err := semaphore.New(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// grant is the outcome of a Lock run by lockAsync.
type grant struct {
	lease mutex.Lease
	err   error
	at    time.Time
}

func lockAsync(ctx context.Context, l mutex.Locker, keys ...string) <-chan grant {
	ch := make(chan grant, 1)
	go func() {
		lease, err := l.Lock(ctx, keys...)
		ch <- grant{lease, err, time.Now()}
	}()
	return ch
}

// keysLeft returns the Redis keys that start with p.
func keysLeft(t testing.TB, c redis.UniversalClient, p string) []string {
	t.Helper()
	keys, err := redistest.Keys(context.Background(), c, p+"*")
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// queueLen returns the number of Lock calls queued for key in FIFO mode.
func queueLen(t testing.TB, c redis.UniversalClient, p, key string) int64 {
	t.Helper()
	n, err := c.ZCard(context.Background(), p+":{"+key+"}:q").Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitQueueLen waits until n Lock calls are queued for key.
func waitQueueLen(t testing.TB, c redis.UniversalClient, p, key string, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for queueLen(t, c, p, key) != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue of %q has %d waiters, want %d", key, queueLen(t, c, p, key), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
