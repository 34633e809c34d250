package mutex_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// grant is the outcome of a Lock run by lockAsync.
type grant struct {
	lease mutex.Lease
	err   error
	at    time.Time // when Lock returned
}

// lockAsync runs m.Lock in a goroutine and delivers its outcome.
func lockAsync(ctx context.Context, m *mutex.Mutex, keys ...string) <-chan grant {
	ch := make(chan grant, 1)
	go func() {
		l, err := m.Lock(ctx, keys...)
		ch <- grant{l, err, time.Now()}
	}()
	return ch
}

// newMutex returns a Mutex on its own client of srv, closed at cleanup.
func newMutex(t testing.TB, srv *redistest.Server, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	m, err := mutex.New(srv.Client(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// prefix returns a key prefix unique to the test.
func prefix(t testing.TB) string {
	return "t:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}

// keysLeft returns the Redis keys that start with p, on every primary of a
// cluster.
func keysLeft(t testing.TB, c redis.UniversalClient, p string) []string {
	t.Helper()
	keys, err := redistest.Keys(context.Background(), c, p+"*")
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(fmt.Errorf("unexpected error: %w", err))
		}
		return v
	}
}

// backendMutex returns a Mutex on its own client of b, closed at cleanup.
func backendMutex(t testing.TB, b redistest.Backend, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	return newMutexOn(t, b.Client(t), cfg)
}
