package middleware_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// newMutex returns a Mutex on c, closed at cleanup.
func newMutex(t testing.TB, c redis.UniversalClient, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	m, err := mutex.New(c, cfg)
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

// lockKeysLeft returns the Redis keys that start with p but the revocation
// markers of lost replies ("<lock key>:x:<token>"), after checking that
// those expire by themselves.
func lockKeysLeft(t testing.TB, c redis.UniversalClient, p string) []string {
	t.Helper()
	var keys []string
	for _, k := range keysLeft(t, c, p) {
		if !strings.Contains(k, ":x:") {
			keys = append(keys, k)
			continue
		}
		if ttl := c.PTTL(context.Background(), k).Val(); ttl <= 0 {
			t.Errorf("revocation marker %s does not expire (PTTL %v)", k, ttl)
		}
	}
	return keys
}

// newScheduler returns a Scheduler closed at cleanup.
func newScheduler(t testing.TB, cfg middleware.SchedulerConfig) *middleware.Scheduler {
	t.Helper()
	s, err := middleware.NewScheduler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// recorder is a Middleware that records the calls reaching the Locker it
// wraps, and can make them fail.
type recorder struct {
	next  mutex.Locker
	mu    sync.Mutex
	calls []string
	fail  func(n int) error // error for the n-th call (from 1), or nil
	after func(n int)       // called after the n-th call reached next
}

func record(fail func(n int) error) (*recorder, middleware.Middleware) {
	r := &recorder{fail: fail}
	return r, func(next mutex.Locker) mutex.Locker {
		r.next = next
		return r
	}
}

func (r *recorder) note(op string) error {
	r.mu.Lock()
	r.calls = append(r.calls, op)
	n := len(r.calls)
	r.mu.Unlock()
	if r.fail != nil {
		return r.fail(n)
	}
	return nil
}

func (r *recorder) done() {
	if r.after != nil {
		r.after(r.count())
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func (r *recorder) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	if err := r.note("Lock"); err != nil {
		return nil, err
	}
	defer r.done()
	return r.next.Lock(ctx, keys...)
}

func (r *recorder) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	if err := r.note("TryLock"); err != nil {
		return nil, err
	}
	defer r.done()
	return r.next.TryLock(ctx, keys...)
}

func (r *recorder) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	if err := r.note("Check"); err != nil {
		return mutex.Available, err
	}
	defer r.done()
	return r.next.Check(ctx, keys...)
}
