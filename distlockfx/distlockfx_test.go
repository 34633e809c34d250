package distlockfx_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/distlock/distlock/distlockfx"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/registry"
)

// supplyClient provides a client of the shared server as the application's
// redis.UniversalClient.
func supplyClient(t *testing.T) fx.Option {
	c := redistest.Shared(t).Client(t)
	return fx.Provide(func() redis.UniversalClient { return c })
}

type lockers struct {
	fx.In

	Orders   mutex.Locker `name:"orders"`
	Invoices mutex.Locker `name:"invoices"`
	Registry *registry.Registry
}

func TestNamedLockers(t *testing.T) {
	p := prefix(t)
	var got lockers
	app := fxtest.New(t,
		supplyClient(t),
		distlockfx.Module,
		distlockfx.Lock("orders", mutex.Config{Prefix: p, TTL: 2 * time.Second}, middleware.Retry()),
		distlockfx.Inherit("invoices", "orders", func(c *mutex.Config) { c.Prefix = p + ":invoices" }),
		fx.Populate(&got),
	)
	app.RequireStart()

	for name, l := range map[string]mutex.Locker{"orders": got.Orders, "invoices": got.Invoices} {
		fromRegistry, err := got.Registry.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if fromRegistry != l {
			t.Errorf("Registry.Get(%q) is not the injected Locker", name)
		}
	}
	ctx := t.Context()
	order, err := got.Orders.TryLock(ctx, "42")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.Orders.TryLock(ctx, "42"); !errors.Is(err, mutex.ErrNotObtained) {
		t.Errorf("second TryLock: %v, want ErrNotObtained", err)
	}
	// Another prefix: the same key is free.
	invoice, err := got.Invoices.TryLock(ctx, "42")
	if err != nil {
		t.Fatal(err)
	}

	app.RequireStop()
	if _, err := got.Orders.TryLock(ctx, "43"); !errors.Is(err, mutex.ErrClosed) {
		t.Errorf("TryLock after Stop: %v, want ErrClosed", err)
	}
	if _, err := got.Registry.Get("orders"); !errors.Is(err, mutex.ErrClosed) {
		t.Errorf("Registry.Get after Stop: %v, want ErrClosed", err)
	}
	for _, l := range []mutex.Lease{order, invoice} {
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock after Stop: %v", err)
		}
	}
}

// Settings stands for an application's own configuration.
type Settings struct{ LockTTL time.Duration }

func TestLockFrom(t *testing.T) {
	p := prefix(t)
	var got struct {
		fx.In
		Reports mutex.Locker `name:"reports"`
		Child   mutex.Locker `name:"child"`
	}
	app := fxtest.New(t,
		supplyClient(t),
		fx.Supply(Settings{LockTTL: 3 * time.Second}),
		distlockfx.Module,
		distlockfx.LockFrom("reports", func(s Settings) (mutex.Config, error) {
			return mutex.Config{Prefix: p, TTL: s.LockTTL}, nil
		}),
		distlockfx.Inherit("child", "reports", func(c *mutex.Config) { c.Prefix += ":child" }),
		fx.Populate(&got),
	)
	app.RequireStart()
	defer app.RequireStop()
	for _, tc := range []struct {
		l      mutex.Locker
		prefix string
	}{{got.Reports, p}, {got.Child, p + ":child"}} {
		m := tc.l.(*mutex.Mutex)
		if m.Prefix() != tc.prefix || m.TTL() != 3*time.Second {
			t.Errorf("Mutex has prefix %q and TTL %v, want %q and 3s", m.Prefix(), m.TTL(), tc.prefix)
		}
	}
}

func TestLockBuiltWithoutConsumers(t *testing.T) {
	var r *registry.Registry
	app := fxtest.New(t,
		supplyClient(t),
		distlockfx.Module,
		distlockfx.Lock("unused", mutex.Config{Prefix: prefix(t)}),
		fx.Populate(&r),
	)
	app.RequireStart()
	defer app.RequireStop()
	if _, err := r.Get("unused"); err != nil {
		t.Errorf("Get of a configuration nothing injects: %v", err)
	}
}

func TestNameWithQuotes(t *testing.T) {
	const name = `a "quoted" name`
	var r *registry.Registry
	app := fxtest.New(t,
		supplyClient(t),
		distlockfx.Module,
		distlockfx.Lock(name, mutex.Config{Prefix: prefix(t)}),
		distlockfx.Inherit("child", name, nil),
		fx.Populate(&r),
	)
	app.RequireStart()
	defer app.RequireStop()
	if _, err := r.Get(name); err != nil {
		t.Error(err)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []fx.Option
		is   error // nil: any error
	}{
		{
			name: "bad config",
			opts: []fx.Option{distlockfx.Lock("orders", mutex.Config{TTL: -time.Second})},
			is:   mutex.ErrInvalid,
		},
		{
			name: "nil decorator",
			opts: []fx.Option{distlockfx.Lock("orders", mutex.Config{}, nil)},
			is:   mutex.ErrInvalid,
		},
		{
			name: "empty name",
			opts: []fx.Option{distlockfx.Lock("", mutex.Config{})},
			is:   mutex.ErrInvalid,
		},
		{
			name: "empty parent",
			opts: []fx.Option{distlockfx.Inherit("child", "", nil)},
			is:   mutex.ErrInvalid,
		},
		{
			name: "bad override",
			opts: []fx.Option{
				distlockfx.Lock("orders", mutex.Config{}),
				distlockfx.Inherit("child", "orders", func(c *mutex.Config) { c.Replicas = -1 }),
			},
			is: mutex.ErrInvalid,
		},
		{
			name: "LockFrom constructor of another type",
			opts: []fx.Option{distlockfx.LockFrom("orders", func() string { return "" })},
			is:   mutex.ErrInvalid,
		},
		{
			name: "LockFrom constructor error",
			opts: []fx.Option{distlockfx.LockFrom("orders", func() (mutex.Config, error) { return mutex.Config{}, errBoom })},
			is:   errBoom,
		},
		{
			name: "duplicate name",
			opts: []fx.Option{
				distlockfx.Lock("orders", mutex.Config{}),
				distlockfx.Lock("orders", mutex.Config{}),
			},
		},
		{
			name: "unknown parent",
			opts: []fx.Option{distlockfx.Inherit("child", "orders", nil)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]fx.Option{supplyClient(t), distlockfx.Module, fx.NopLogger}, tc.opts...)
			err := fx.New(opts...).Err()
			if err == nil {
				t.Fatal("fx.New succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want one wrapping %v", err, tc.is)
			}
			t.Log(err)
		})
	}
}

var errBoom = errors.New("boom")

func TestMissingClient(t *testing.T) {
	err := fx.New(fx.NopLogger, distlockfx.Module, distlockfx.Lock("orders", mutex.Config{})).Err()
	if err == nil {
		t.Fatal("fx.New succeeded without a client")
	}
	t.Log(err)
}

func TestStopClosesWaiters(t *testing.T) {
	var l struct {
		fx.In
		Orders mutex.Locker `name:"orders"`
	}
	app := fxtest.New(t,
		supplyClient(t),
		distlockfx.Module,
		distlockfx.Lock("orders", mutex.Config{Prefix: prefix(t), TTL: 5 * time.Second}),
		fx.Populate(&l),
	)
	app.RequireStart()
	ctx := t.Context()
	lease, err := l.Orders.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	go func() {
		_, err := l.Orders.Lock(ctx, "k")
		waiting <- err
	}()
	// Give the second Lock time to start waiting; if it has not, it fails
	// with ErrClosed all the same.
	time.Sleep(50 * time.Millisecond)
	app.RequireStop()
	select {
	case err := <-waiting:
		if !errors.Is(err, mutex.ErrClosed) {
			t.Errorf("waiting Lock after Stop: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting Lock did not return after Stop")
	}
	if err := lease.Unlock(context.Background()); err != nil {
		t.Error(err)
	}
}
