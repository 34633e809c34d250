// Package registry keeps named lock configurations, so that the parts of a
// program that lock share one Locker per configuration instead of each
// building its own.
//
// A configuration is registered under a name in one of three ways:
//
//   - Register builds a *mutex.Mutex from a client and a mutex.Config at
//     once, and decorates it with middleware, in middleware.Chain order;
//   - RegisterFunc stores a factory that builds the Locker on first use,
//     for a configuration known only at run time;
//   - Inherit derives a configuration from a registered one: same client,
//     a copy of its Config changed by an override function, its decorators
//     and the child's own.
//
// Get returns the Locker of a name, the same one to every caller:
//
//	reg := registry.New()
//	defer reg.Close()
//	err := reg.Register("orders", client, mutex.Config{Prefix: "orders", TTL: 10 * time.Second},
//		middleware.Retry())
//	...
//	err = reg.Inherit("invoices", "orders", func(c *mutex.Config) { c.Prefix = "invoices" })
//	...
//	orders, err := reg.Get("orders")
//
// # Decorators of inherited configurations
//
// A child inherits its parent's decorators, and its own wrap them: a parent
// registered with decorators P1, P2 and a child with C1, C2 give the child
// C1(C2(P1(P2(m)))), where m is the child's own Mutex. Each configuration
// has a Mutex of its own, even when an override changes nothing, so the
// child's waiters and pub/sub connection are apart from the parent's.
// Configurations with the same Prefix lock the same keys.
//
// # Lazy configurations
//
// The factory given to RegisterFunc runs once, in the first Get or
// GetContext for its name, with that call's context (context.Background()
// for Get); calls that arrive meanwhile wait for it. Its result is kept: a
// factory that fails is not called again, and every Get of the name
// returns its error. That makes a broken configuration fail the same way
// every time instead of costing a new attempt on every call; a factory that
// should retry a flaky dependency must do so itself, within the context it
// is given.
//
// # Closing
//
// Close closes the Mutexes that the Registry built and the Lockers that
// factories returned, when they have a Close method; it leaves the Redis
// clients open, since they belong to the caller. Lock calls waiting on a
// closed configuration return mutex.ErrClosed, and so does Get.
//
// # Errors
//
// Bad input (an empty name, a nil client, a bad Config, a nil decorator or
// factory, a parent registered with RegisterFunc) gets an error wrapping
// mutex.ErrInvalid, an unknown name one wrapping ErrUnknown, a name taken
// one wrapping ErrDuplicate, and a closed Registry one wrapping
// mutex.ErrClosed, all before any Redis call. Messages name the
// configuration, as in `registry: unknown lock configuration "orders"`.
package registry
