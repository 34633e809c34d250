package registry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/registry"
)

func newRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	r := registry.New()
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func mustGet(t *testing.T, r *registry.Registry, name string) mutex.Locker {
	t.Helper()
	l, err := r.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRegisterAndGet(t *testing.T) {
	c := client(t)
	r := newRegistry(t)
	p := prefix(t)
	if err := r.Register("orders", c, mutex.Config{Prefix: p, TTL: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	l := mustGet(t, r, "orders")
	if again := mustGet(t, r, "orders"); again != l {
		t.Error("second Get returned another Locker")
	}
	m, ok := l.(*mutex.Mutex)
	if !ok {
		t.Fatalf("Locker without decorators is a %T, want *mutex.Mutex", l)
	}
	if m.Prefix() != p || m.TTL() != 2*time.Second {
		t.Errorf("Mutex has prefix %q and TTL %v, want %q and 2s", m.Prefix(), m.TTL(), p)
	}

	ctx := t.Context()
	lease, err := l.TryLock(ctx, "order:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TryLock(ctx, "order:1"); !errors.Is(err, mutex.ErrNotObtained) {
		t.Errorf("second TryLock: %v, want ErrNotObtained", err)
	}
	if err := lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := redistest.Keys(ctx, c, p+"*")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("keys left in Redis: %v", keys)
	}
}

func TestRegisterDecoratorOrder(t *testing.T) {
	r := newRegistry(t)
	var tr trail
	if err := r.Register("orders", client(t), mutex.Config{Prefix: prefix(t)}, tr.tag("A"), tr.tag("B")); err != nil {
		t.Fatal(err)
	}
	if _, err := mustGet(t, r, "orders").Check(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.take(), []string{"A", "B"}; !slices.Equal(got, want) {
		t.Errorf("calls passed %v, want %v", got, want)
	}
}

func TestRegisterErrors(t *testing.T) {
	c := silentClient(t)
	r := newRegistry(t)
	if err := r.Register("taken", c, mutex.Config{}); err != nil {
		t.Fatal(err)
	}
	nilDecorator := func(mutex.Locker) mutex.Locker { return nil }
	for _, tc := range []struct {
		name       string
		register   func() error
		is         error
		msg        string
		registered string // a name that must stay unknown
	}{
		{
			name:     "empty name",
			register: func() error { return r.Register("", c, mutex.Config{}) },
			is:       mutex.ErrInvalid,
			msg:      "mutex: invalid argument: empty lock configuration name",
		},
		{
			name:       "nil client",
			register:   func() error { return r.Register("a", nil, mutex.Config{}) },
			is:         mutex.ErrInvalid,
			msg:        `lock configuration "a": mutex: invalid argument: nil client`,
			registered: "a",
		},
		{
			name:       "typed nil client",
			register:   func() error { return r.Register("b", (*redis.Client)(nil), mutex.Config{}) },
			is:         mutex.ErrInvalid,
			registered: "b",
		},
		{
			name:       "bad config",
			register:   func() error { return r.Register("c", c, mutex.Config{TTL: -time.Second}) },
			is:         mutex.ErrInvalid,
			msg:        `lock configuration "c": mutex: invalid argument: negative TTL -1s`,
			registered: "c",
		},
		{
			name:       "nil decorator",
			register:   func() error { return r.Register("d", c, mutex.Config{}, middleware.Retry(), nil) },
			is:         mutex.ErrInvalid,
			msg:        `mutex: invalid argument: nil decorator at 1 for lock configuration "d"`,
			registered: "d",
		},
		{
			name:       "decorator returns nil",
			register:   func() error { return r.Register("e", c, mutex.Config{}, nilDecorator) },
			is:         mutex.ErrInvalid,
			msg:        `mutex: invalid argument: decorators of lock configuration "e" returned a nil Locker`,
			registered: "e",
		},
		{
			name:     "duplicate",
			register: func() error { return r.Register("taken", c, mutex.Config{}) },
			is:       registry.ErrDuplicate,
			msg:      `registry: duplicate lock configuration "taken"`,
		},
		{
			name:     "nil factory",
			register: func() error { return r.RegisterFunc("taken", nil) },
			is:       mutex.ErrInvalid,
			msg:      `mutex: invalid argument: nil factory for lock configuration "taken"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.register()
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want one wrapping %v", err, tc.is)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("message %q, want %q", err, tc.msg)
			}
			if tc.registered != "" {
				if _, err := r.Get(tc.registered); !errors.Is(err, registry.ErrUnknown) {
					t.Errorf("Get(%q) after a failed Register: %v, want ErrUnknown", tc.registered, err)
				}
			}
		})
	}
	if err := r.RegisterFunc("taken", func(context.Context) (mutex.Locker, error) { return nil, nil }); !errors.Is(err, registry.ErrDuplicate) {
		t.Errorf("RegisterFunc of a taken name: %v, want ErrDuplicate", err)
	}
}

func TestGetErrors(t *testing.T) {
	r := newRegistry(t)
	_, err := r.Get("orders")
	if !errors.Is(err, registry.ErrUnknown) {
		t.Fatalf("Get of an unknown name: %v, want ErrUnknown", err)
	}
	if want := `registry: unknown lock configuration "orders"`; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if _, err := r.Get(""); !errors.Is(err, mutex.ErrInvalid) {
		t.Errorf("Get of an empty name: %v, want ErrInvalid", err)
	}
}

func TestInherit(t *testing.T) {
	c := client(t)
	r := newRegistry(t)
	p := prefix(t)
	parentCfg := mutex.Config{Prefix: p, TTL: 3 * time.Second}
	if err := r.Register("parent", c, parentCfg); err != nil {
		t.Fatal(err)
	}
	var seen mutex.Config
	err := r.Inherit("child", "parent", func(cfg *mutex.Config) {
		seen = *cfg
		cfg.Prefix = p + ":child"
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != parentCfg {
		t.Errorf("override got %+v, want the parent's %+v", seen, parentCfg)
	}
	parent := mustGet(t, r, "parent").(*mutex.Mutex)
	child := mustGet(t, r, "child").(*mutex.Mutex)
	if child == parent {
		t.Fatal("child shares the parent's Mutex")
	}
	if child.Prefix() != p+":child" || child.TTL() != 3*time.Second {
		t.Errorf("child has prefix %q and TTL %v, want %q and 3s", child.Prefix(), child.TTL(), p+":child")
	}
	if parent.Prefix() != p {
		t.Errorf("override changed the parent's prefix to %q", parent.Prefix())
	}

	// A nil override copies the parent; same prefix, same keys, same client.
	if err := r.Inherit("twin", "parent", nil); err != nil {
		t.Fatal(err)
	}
	twin := mustGet(t, r, "twin")
	ctx := t.Context()
	lease, err := parent.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := twin.TryLock(ctx, "k"); !errors.Is(err, mutex.ErrNotObtained) {
		t.Errorf("twin TryLock of a key its parent holds: %v, want ErrNotObtained", err)
	}
	if err := lease.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestInheritDecorators(t *testing.T) {
	r := newRegistry(t)
	var tr trail
	if err := r.Register("parent", client(t), mutex.Config{Prefix: prefix(t)}, tr.tag("P1"), tr.tag("P2")); err != nil {
		t.Fatal(err)
	}
	if err := r.Inherit("child", "parent", nil, tr.tag("C1"), tr.tag("C2")); err != nil {
		t.Fatal(err)
	}
	if err := r.Inherit("grandchild", "child", nil, tr.tag("G")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]string{
		"parent":     {"P1", "P2"},
		"child":      {"C1", "C2", "P1", "P2"},
		"grandchild": {"G", "C1", "C2", "P1", "P2"},
	} {
		if _, err := mustGet(t, r, name).Check(t.Context(), "k"); err != nil {
			t.Fatal(err)
		}
		if got := tr.take(); !slices.Equal(got, want) {
			t.Errorf("calls to %s passed %v, want %v", name, got, want)
		}
	}
}

func TestInheritErrors(t *testing.T) {
	c := silentClient(t)
	r := newRegistry(t)
	if err := r.Register("parent", c, mutex.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterFunc("lazy", func(context.Context) (mutex.Locker, error) {
		t.Error("Inherit called the factory")
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		inherit func() error
		is      error
		msg     string
	}{
		{
			name:    "unknown parent",
			inherit: func() error { return r.Inherit("child", "orders", nil) },
			is:      registry.ErrUnknown,
			msg:     `registry: unknown lock configuration "orders"`,
		},
		{
			name:    "lazy parent",
			inherit: func() error { return r.Inherit("child", "lazy", nil) },
			is:      mutex.ErrInvalid,
			msg:     `mutex: invalid argument: cannot inherit from "lazy": it was registered with RegisterFunc and has no known Config`,
		},
		{
			name:    "empty parent",
			inherit: func() error { return r.Inherit("child", "", nil) },
			is:      mutex.ErrInvalid,
		},
		{
			name:    "empty name",
			inherit: func() error { return r.Inherit("", "parent", nil) },
			is:      mutex.ErrInvalid,
		},
		{
			name:    "duplicate",
			inherit: func() error { return r.Inherit("parent", "parent", nil) },
			is:      registry.ErrDuplicate,
			msg:     `registry: duplicate lock configuration "parent"`,
		},
		{
			name:    "override makes the config invalid",
			inherit: func() error { return r.Inherit("child", "parent", func(c *mutex.Config) { c.Prefix = "{x}" }) },
			is:      mutex.ErrInvalid,
			msg:     `lock configuration "child": mutex: invalid argument: prefix "{x}" contains a brace`,
		},
		{
			name:    "nil decorator",
			inherit: func() error { return r.Inherit("child", "parent", nil, nil) },
			is:      mutex.ErrInvalid,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.inherit()
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want one wrapping %v", err, tc.is)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("message %q, want %q", err, tc.msg)
			}
			if _, err := r.Get("child"); !errors.Is(err, registry.ErrUnknown) {
				t.Errorf("Get after a failed Inherit: %v, want ErrUnknown", err)
			}
		})
	}
}

// newMutexFactory returns a factory that builds a Mutex on c and counts its
// calls; each call first waits for release, if not nil.
func newMutexFactory(c redis.UniversalClient, p string, calls *atomic.Int32, entered chan<- struct{}, release <-chan struct{}) func(context.Context) (mutex.Locker, error) {
	return func(context.Context) (mutex.Locker, error) {
		calls.Add(1)
		if entered != nil {
			close(entered)
		}
		if release != nil {
			<-release
		}
		return mutex.New(c, mutex.Config{Prefix: p})
	}
}

func TestRegisterFuncOnce(t *testing.T) {
	r := newRegistry(t)
	var calls atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	if err := r.RegisterFunc("lazy", newMutexFactory(client(t), prefix(t), &calls, entered, release)); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("RegisterFunc called the factory %d times", n)
	}

	const callers = 16
	lockers := make([]mutex.Locker, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			l, err := r.Get("lazy")
			if err != nil {
				t.Error(err)
			}
			lockers[i] = l
		})
	}
	<-entered
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("factory called %d times, want once", n)
	}
	for i, l := range lockers {
		if l == nil || l != lockers[0] {
			t.Fatalf("caller %d got Locker %v, want the first caller's %v", i, l, lockers[0])
		}
	}
	if _, err := lockers[0].Check(t.Context(), "k"); err != nil {
		t.Error(err)
	}
}

func TestRegisterFuncError(t *testing.T) {
	r := newRegistry(t)
	boom := errors.New("boom")
	var calls atomic.Int32
	if err := r.RegisterFunc("lazy", func(context.Context) (mutex.Locker, error) {
		calls.Add(1)
		return nil, boom
	}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := r.Get("lazy")
		if !errors.Is(err, boom) {
			t.Fatalf("Get: %v, want the factory's error", err)
		}
		if want := `build lock configuration "lazy": boom`; err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("factory called %d times, want once", n)
	}
}

func TestRegisterFuncNilLocker(t *testing.T) {
	r := newRegistry(t)
	if err := r.RegisterFunc("lazy", func(context.Context) (mutex.Locker, error) { return (*mutex.Mutex)(nil), nil }); err != nil {
		t.Fatal(err)
	}
	_, err := r.Get("lazy")
	if !errors.Is(err, mutex.ErrInvalid) {
		t.Fatalf("Get: %v, want ErrInvalid", err)
	}
	if want := `mutex: invalid argument: factory of lock configuration "lazy" returned a nil Locker`; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

func TestRegisterFuncErrorClosesLocker(t *testing.T) {
	r := newRegistry(t)
	l := &closable{}
	if err := r.RegisterFunc("lazy", func(context.Context) (mutex.Locker, error) { return l, errors.New("half built") }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("lazy"); err == nil {
		t.Fatal("Get succeeded")
	}
	if n := l.closes.Load(); n != 1 {
		t.Errorf("Locker returned with an error closed %d times, want once", n)
	}
}

type ctxKey struct{}

func TestRegisterFuncContext(t *testing.T) {
	r := newRegistry(t)
	var got any
	if err := r.RegisterFunc("lazy", func(ctx context.Context) (mutex.Locker, error) {
		got = ctx.Value(ctxKey{})
		return &closable{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetContext(context.WithValue(t.Context(), ctxKey{}, "first"), "lazy"); err != nil {
		t.Fatal(err)
	}
	if got != "first" {
		t.Errorf("factory got context value %v, want the first caller's", got)
	}
}

func TestRegisterFuncWaiterContext(t *testing.T) {
	r := newRegistry(t)
	var calls atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	if err := r.RegisterFunc("lazy", newMutexFactory(client(t), prefix(t), &calls, entered, release)); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() {
		_, err := r.Get("lazy")
		first <- err
	}()
	<-entered

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := r.GetContext(ctx, "lazy")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter whose context ended: %v, want DeadlineExceeded", err)
	}
	if want := `wait for lock configuration "lazy": context deadline exceeded`; err == nil || err.Error() != want {
		t.Errorf("message %v, want %q", err, want)
	}

	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("lazy"); err != nil {
		t.Errorf("Get after the factory returned: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("factory called %d times, want once", n)
	}
}

func TestRegisterFuncPanic(t *testing.T) {
	r := newRegistry(t)
	var calls atomic.Int32
	if err := r.RegisterFunc("lazy", func(context.Context) (mutex.Locker, error) {
		calls.Add(1)
		panic("factory bug")
	}); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if p := recover(); p != "factory bug" {
				t.Errorf("first Get recovered %v, want the factory's panic", p)
			}
		}()
		_, _ = r.Get("lazy")
	}()
	_, err := r.Get("lazy")
	if want := `build lock configuration "lazy": factory panicked`; err == nil || err.Error() != want {
		t.Errorf("Get after a panic: %v, want %q", err, want)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("factory called %d times, want once", n)
	}
}

func TestClose(t *testing.T) {
	c := client(t)
	r := registry.New()
	p := prefix(t)
	if err := r.Register("plain", c, mutex.Config{Prefix: p}, middleware.Retry()); err != nil {
		t.Fatal(err)
	}
	if err := r.Inherit("child", "plain", func(cfg *mutex.Config) { cfg.Prefix = p + ":child" }); err != nil {
		t.Fatal(err)
	}
	built := &closable{}
	if err := r.RegisterFunc("built", func(context.Context) (mutex.Locker, error) { return built, nil }); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterFunc("unused", func(context.Context) (mutex.Locker, error) {
		t.Error("Close called a factory")
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	plain, child := mustGet(t, r, "plain"), mustGet(t, r, "child")
	mustGet(t, r, "built")
	ctx := t.Context()
	lease, err := plain.TryLock(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]mutex.Locker{"plain": plain, "child": child} {
		if _, err := l.TryLock(ctx, "k"); !errors.Is(err, mutex.ErrClosed) {
			t.Errorf("TryLock on %s after Close: %v, want ErrClosed", name, err)
		}
	}
	if n := built.closes.Load(); n != 1 {
		t.Errorf("factory's Locker closed %d times, want once", n)
	}
	if err := lease.Unlock(ctx); err != nil {
		t.Errorf("Unlock of a lease granted before Close: %v", err)
	}

	_, err = r.Get("plain")
	if !errors.Is(err, mutex.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if want := `lock configuration "plain": mutex: closed`; err == nil || err.Error() != want {
		t.Errorf("message %v, want %q", err, want)
	}
	for what, err := range map[string]error{
		"Register":     r.Register("new", c, mutex.Config{}),
		"RegisterFunc": r.RegisterFunc("new", func(context.Context) (mutex.Locker, error) { return nil, nil }),
		"Inherit":      r.Inherit("new", "plain", nil),
		"Get unknown":  func() error { _, err := r.Get("new"); return err }(),
	} {
		if !errors.Is(err, mutex.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", what, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if n := built.closes.Load(); n != 1 {
		t.Errorf("factory's Locker closed %d times after a second Close, want once", n)
	}
}

func TestCloseErrors(t *testing.T) {
	r := registry.New()
	errA, errB := errors.New("a failed"), errors.New("b failed")
	for name, err := range map[string]error{"a": errA, "b": errB} {
		if err := r.RegisterFunc(name, func(context.Context) (mutex.Locker, error) { return &closable{err: err}, nil }); err != nil {
			t.Fatal(err)
		}
		mustGet(t, r, name)
	}
	err := r.Close()
	if !errors.Is(err, errA) || !errors.Is(err, errB) {
		t.Fatalf("Close: %v, want both errors", err)
	}
	if want := "close lock configuration \"a\": a failed\nclose lock configuration \"b\": b failed"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

func TestCloseWhileFactoryRuns(t *testing.T) {
	r := registry.New()
	l := &closable{}
	entered, release := make(chan struct{}), make(chan struct{})
	if err := r.RegisterFunc("lazy", func(context.Context) (mutex.Locker, error) {
		close(entered)
		<-release
		return l, nil
	}); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := r.Get("lazy")
		got <- err
	}()
	<-entered
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-got; !errors.Is(err, mutex.ErrClosed) {
		t.Errorf("Get whose factory returned after Close: %v, want ErrClosed", err)
	}
	if n := l.closes.Load(); n != 1 {
		t.Errorf("Locker returned after Close closed %d times, want once", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	c := client(t)
	r := newRegistry(t)
	p := prefix(t)
	if err := r.Register("root", c, mutex.Config{Prefix: p}); err != nil {
		t.Fatal(err)
	}
	const workers = 8
	var registered atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// Every worker races for the same name; one wins.
			switch err := r.Inherit("shared", "root", nil); {
			case err == nil:
				registered.Add(1)
			case !errors.Is(err, registry.ErrDuplicate):
				t.Error(err)
			}
			name := fmt.Sprintf("w%d", w)
			if err := r.Inherit(name, "root", func(cfg *mutex.Config) { cfg.Prefix = p + ":" + name }); err != nil {
				t.Error(err)
				return
			}
			l, err := r.Get(name)
			if err != nil {
				t.Error(err)
				return
			}
			lease, err := l.TryLock(t.Context(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			if err := lease.Unlock(t.Context()); err != nil {
				t.Error(err)
			}
			if _, err := r.Get("root"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := registered.Load(); n != 1 {
		t.Errorf("%d workers registered the same name, want 1", n)
	}
}
