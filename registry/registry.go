package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

var (
	// ErrUnknown reports a name under which no lock configuration is
	// registered.
	ErrUnknown = errors.New("registry: unknown lock configuration")

	// ErrDuplicate reports a name under which a lock configuration is
	// registered already.
	ErrDuplicate = errors.New("registry: duplicate lock configuration")
)

// Registry holds named lock configurations and the Lockers built from them.
// It is safe for concurrent use. Its zero value is not ready to use; call
// New.
type Registry struct {
	mu      sync.Mutex
	entries map[string]*entry
	closed  bool
}

// entry is one named configuration. An entry made by Register or Inherit
// has its Locker from the start; one made by RegisterFunc has a factory and
// gets its Locker, or its error, from the first Get.
type entry struct {
	// Register and Inherit.
	client     redis.UniversalClient
	cfg        mutex.Config
	decorators []middleware.Middleware // in Chain order, inherited ones last
	core       *mutex.Mutex

	// RegisterFunc.
	factory func(ctx context.Context) (mutex.Locker, error)
	started bool          // the factory was called; guarded by Registry.mu
	built   bool          // locker and err are set; guarded by Registry.mu
	done    chan struct{} // closed once built is set

	locker mutex.Locker // set from the start, or once built
	err    error        // the factory's error, kept for every Get
}

// closer is a Locker with a Close method that reports an error, such as
// *mutex.Mutex.
type closer interface{ Close() error }

// quietCloser is a Locker with a Close method that reports nothing.
type quietCloser interface{ Close() }

// New returns an empty Registry.
func New() *Registry {
	return &Registry{entries: make(map[string]*entry)}
}

// Register builds a *mutex.Mutex with mutex.New(client, cfg), decorates it
// with middleware.Chain(m, decorators...), and stores the resulting Locker
// under name. Get returns that Locker, the same one to every caller; Close
// closes the Mutex.
//
// It fails with an error wrapping mutex.ErrInvalid for an empty name, a nil
// client, a bad Config or a nil decorator, with one wrapping ErrDuplicate
// when name is taken, and with one wrapping mutex.ErrClosed after Close,
// all before any Redis call.
func (r *Registry) Register(name string, client redis.UniversalClient, cfg mutex.Config, decorators ...middleware.Middleware) error {
	if err := r.vacant(name); err != nil {
		return err
	}
	e, err := build(name, client, cfg, slices.Clone(decorators))
	if err != nil {
		return err
	}
	return r.add(name, e)
}

// RegisterFunc stores f under name, to build the Locker on first use: the
// first Get or GetContext for name calls f, with the context of that call,
// and every later call returns what f returned. f is called at most once,
// even when it fails or panics: its error is kept and returned, wrapped,
// to every caller, and the name never gets a Locker. To try again, register
// the factory under another name or in another Registry. Calls made while
// f runs wait for it, or for their own context to end.
//
// Close closes the Locker f returned if it has a Close method (Close()
// error, as io.Closer and *mutex.Mutex have, or Close()). A Locker that f
// returns together with an error, or after Close, is closed at once; in
// the second case, the GetContext that ran f fails with an error wrapping
// mutex.ErrClosed.
//
// A configuration registered with RegisterFunc has no Config the Registry
// knows, so Inherit refuses it as a parent.
//
// It fails with an error wrapping mutex.ErrInvalid for an empty name or a
// nil f, with one wrapping ErrDuplicate when name is taken, and with one
// wrapping mutex.ErrClosed after Close.
func (r *Registry) RegisterFunc(name string, f func(ctx context.Context) (mutex.Locker, error)) error {
	if f == nil {
		return fmt.Errorf("%w: nil factory for lock configuration %q", mutex.ErrInvalid, name)
	}
	if err := r.vacant(name); err != nil {
		return err
	}
	return r.add(name, &entry{factory: f, done: make(chan struct{})})
}

// Inherit registers name with the client and Config of the configuration
// registered as parent: override, when not nil, changes a copy of the
// parent's Config, and the parent keeps its own. The child gets a Mutex of
// its own, built with mutex.New on the parent's client.
//
// The child inherits the parent's decorators, including those the parent
// inherited itself, and its own decorators wrap them: with a parent
// registered with decorators P1, P2 and a child with C1, C2, the child's
// Locker is C1(C2(P1(P2(m)))), which is middleware.Chain(m, C1, C2, P1, P2).
// A decorator given to both therefore applies twice (twice the retries for
// Retry), so give the child only what the parent lacks.
//
// The parent must be registered before the child, with Register or
// Inherit. It fails with an error wrapping ErrUnknown for an unknown
// parent, with one wrapping mutex.ErrInvalid for an empty name, a parent
// registered with RegisterFunc, a Config that override made invalid or a
// nil decorator, with one wrapping ErrDuplicate when name is taken, and with
// one wrapping mutex.ErrClosed after Close, all before any Redis call.
func (r *Registry) Inherit(name, parent string, override func(*mutex.Config), decorators ...middleware.Middleware) error {
	if err := r.vacant(name); err != nil {
		return err
	}
	r.mu.Lock()
	p, ok := r.entries[parent]
	r.mu.Unlock()
	switch {
	case parent == "":
		return fmt.Errorf("%w: empty parent name for lock configuration %q", mutex.ErrInvalid, name)
	case !ok:
		return fmt.Errorf("%w %q", ErrUnknown, parent)
	case p.factory != nil:
		return fmt.Errorf("%w: cannot inherit from %q: it was registered with RegisterFunc and has no known Config", mutex.ErrInvalid, parent)
	}
	// The parent's fields other than the factory's results never change
	// once it is in the map.
	cfg := p.cfg
	if override != nil {
		override(&cfg)
	}
	e, err := build(name, p.client, cfg, slices.Concat(decorators, p.decorators))
	if err != nil {
		return err
	}
	return r.add(name, e)
}

// Get returns the Locker registered under name. It calls the factory of a
// name registered with RegisterFunc with context.Background(); see
// GetContext.
func (r *Registry) Get(name string) (mutex.Locker, error) {
	return r.GetContext(context.Background(), name)
}

// GetContext returns the Locker registered under name. For a name
// registered with RegisterFunc, the first call runs the factory with ctx
// and later calls wait for it, until their own ctx ends; see RegisterFunc.
//
// It fails with an error wrapping ErrUnknown for an unknown name, with one
// wrapping mutex.ErrInvalid for an empty name, with one wrapping
// mutex.ErrClosed after Close, with one wrapping ctx.Err() when ctx ends
// while a factory runs for another call, and with the factory's error,
// wrapped, when it failed.
func (r *Registry) GetContext(ctx context.Context, name string) (mutex.Locker, error) {
	if name == "" {
		return nil, errEmptyName
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, fmt.Errorf("lock configuration %q: %w", name, mutex.ErrClosed)
	}
	e, ok := r.entries[name]
	if !ok {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w %q", ErrUnknown, name)
	}
	if e.factory == nil || e.built {
		r.mu.Unlock()
		return e.locker, e.err
	}
	first := !e.started
	e.started = true
	r.mu.Unlock()

	if first {
		r.run(ctx, name, e)
	} else {
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for lock configuration %q: %w", name, ctx.Err())
		}
	}
	// locker and err are set before done is closed and never change after.
	return e.locker, e.err
}

// run calls the factory of e and records its result.
func (r *Registry) run(ctx context.Context, name string, e *entry) {
	var (
		l        mutex.Locker
		err      error
		finished bool
	)
	defer func() {
		if !finished {
			// The factory panicked: the waiters get an error, and the
			// panic goes on up the caller's stack.
			err = fmt.Errorf("build lock configuration %q: factory panicked", name)
			l = nil
		}
		r.mu.Lock()
		if r.closed {
			// Close has run and did not see this Locker: close it here.
			err = errors.Join(fmt.Errorf("lock configuration %q: %w", name, mutex.ErrClosed), err, closeLocker(l))
			l = nil
		}
		e.locker, e.err, e.built = l, err, true
		close(e.done)
		r.mu.Unlock()
	}()
	l, err = e.factory(ctx)
	finished = true
	switch {
	case err != nil:
		if l != nil {
			err = errors.Join(err, closeLocker(l))
		}
		l, err = nil, fmt.Errorf("build lock configuration %q: %w", name, err)
	case isNil(l):
		l, err = nil, fmt.Errorf("%w: factory of lock configuration %q returned a nil Locker", mutex.ErrInvalid, name)
	}
}

// Close closes every Mutex that Register and Inherit built, and every
// Locker with a Close method that a RegisterFunc factory returned, and
// returns their errors joined. It does not close the Redis clients. After
// Close, Get, GetContext, Register, RegisterFunc and Inherit fail with an
// error wrapping mutex.ErrClosed, and the Lockers already handed out fail
// as closed Mutexes do; leases already granted stay valid until unlocked.
// Closing a closed Registry does nothing and returns nil.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	type named struct {
		name   string
		locker mutex.Locker
	}
	var toClose []named
	for name, e := range r.entries {
		switch {
		case e.core != nil:
			toClose = append(toClose, named{name, e.core})
		case e.built && e.locker != nil:
			toClose = append(toClose, named{name, e.locker})
		}
	}
	r.mu.Unlock()

	slices.SortFunc(toClose, func(a, b named) int { return cmp.Compare(a.name, b.name) })
	var errs []error
	for _, c := range toClose {
		if err := closeLocker(c.locker); err != nil {
			errs = append(errs, fmt.Errorf("close lock configuration %q: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

var errEmptyName = fmt.Errorf("%w: empty lock configuration name", mutex.ErrInvalid)

// vacant reports an error if name cannot be registered now.
func (r *Registry) vacant(name string) error {
	if name == "" {
		return errEmptyName
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vacantLocked(name)
}

func (r *Registry) vacantLocked(name string) error {
	if r.closed {
		return fmt.Errorf("register lock configuration %q: %w", name, mutex.ErrClosed)
	}
	if _, ok := r.entries[name]; ok {
		return fmt.Errorf("%w %q", ErrDuplicate, name)
	}
	return nil
}

// add stores e under name, or closes what e holds if name was taken, or the
// Registry closed, since vacant looked.
func (r *Registry) add(name string, e *entry) error {
	r.mu.Lock()
	err := r.vacantLocked(name)
	if err == nil {
		r.entries[name] = e
	}
	r.mu.Unlock()
	if err != nil && e.core != nil {
		// Nothing used this Mutex yet; closing it cannot fail.
		_ = e.core.Close()
	}
	return err
}

// build makes the entry of a configuration with a known Config.
func build(name string, client redis.UniversalClient, cfg mutex.Config, decorators []middleware.Middleware) (*entry, error) {
	for i, d := range decorators {
		if d == nil {
			return nil, fmt.Errorf("%w: nil decorator at %d for lock configuration %q", mutex.ErrInvalid, i, name)
		}
	}
	m, err := mutex.New(client, cfg)
	if err != nil {
		return nil, fmt.Errorf("lock configuration %q: %w", name, err)
	}
	l := middleware.Chain(m, decorators...)
	if isNil(l) {
		_ = m.Close()
		return nil, fmt.Errorf("%w: decorators of lock configuration %q returned a nil Locker", mutex.ErrInvalid, name)
	}
	return &entry{client: client, cfg: cfg, decorators: decorators, core: m, locker: l}, nil
}

// closeLocker closes l if it has a Close method.
func closeLocker(l mutex.Locker) error {
	switch c := l.(type) {
	case closer:
		return c.Close()
	case quietCloser:
		c.Close()
	}
	return nil
}

// isNil reports whether l is nil or a nil pointer.
func isNil(l mutex.Locker) bool {
	if l == nil {
		return true
	}
	v := reflect.ValueOf(l)
	return v.Kind() == reflect.Pointer && v.IsNil()
}
