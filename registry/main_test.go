package registry_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// prefix returns a key prefix unique to the test.
func prefix(t testing.TB) string {
	return "t:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}

// client returns a client of the shared server, closed at cleanup.
func client(t testing.TB) redis.UniversalClient {
	t.Helper()
	return redistest.Shared(t).Client(t)
}

// silentClient returns a client whose every dial and command fails the
// test: errors that must come before any Redis call use it.
func silentClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	c.AddHook(silence{t})
	t.Cleanup(func() { c.Close() })
	return c
}

type silence struct{ t *testing.T }

func (s silence) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		s.t.Errorf("dial %s", addr)
		return next(ctx, network, addr)
	}
}

func (s silence) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		s.t.Errorf("Redis call %v", cmd.Args())
		return next(ctx, cmd)
	}
}

func (s silence) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		s.t.Errorf("Redis pipeline of %d commands", len(cmds))
		return next(ctx, cmds)
	}
}

// trail records the order in which calls pass the decorators made by tag.
type trail struct {
	mu    sync.Mutex
	calls []string
}

func (tr *trail) take() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	calls := tr.calls
	tr.calls = nil
	return calls
}

// tag returns a decorator that records name in tr on every call.
func (tr *trail) tag(name string) middleware.Middleware {
	return func(next mutex.Locker) mutex.Locker { return &tagged{name: name, next: next, tr: tr} }
}

type tagged struct {
	name string
	next mutex.Locker
	tr   *trail
}

func (x *tagged) note() {
	x.tr.mu.Lock()
	x.tr.calls = append(x.tr.calls, x.name)
	x.tr.mu.Unlock()
}

func (x *tagged) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	x.note()
	return x.next.Lock(ctx, keys...)
}

func (x *tagged) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	x.note()
	return x.next.TryLock(ctx, keys...)
}

func (x *tagged) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	x.note()
	return x.next.Check(ctx, keys...)
}

// closable is a Locker built by a factory that counts its Close calls.
type closable struct {
	mutex.Locker
	closes atomic.Int32
	err    error
}

func (c *closable) Close() error {
	c.closes.Add(1)
	return c.err
}
