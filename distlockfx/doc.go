// Package distlockfx provides named lock configurations to applications
// built with go.uber.org/fx.
//
// Module provides a *registry.Registry and closes it when the application
// stops. Lock, LockFrom and Inherit register configurations in it and
// provide each one's mutex.Locker under its name, to be injected with a
// name tag:
//
//	fx.New(
//		fx.Provide(newRedisClient), // a redis.UniversalClient of the application's
//		distlockfx.Module,
//		distlockfx.Lock("orders", mutex.Config{Prefix: "orders"}, middleware.Retry()),
//		distlockfx.Inherit("invoices", "orders", func(c *mutex.Config) { c.Prefix = "invoices" }),
//		fx.Invoke(func(p struct {
//			fx.In
//			Orders mutex.Locker `name:"orders"`
//		}) { ... }),
//	)
//
// The package provides no Redis client: the Lockers use the
// redis.UniversalClient that the application provides, which stays the
// application's to close. A constructor that returns a *redis.Client can
// provide it as a redis.UniversalClient with fx.Annotate and fx.As.
//
// # Lifecycle
//
// Every configuration is built while fx.New runs, whether or not anything
// asks for its Locker, and makes no Redis call. A bad Config or a nil
// decorator fails fx.New with an error wrapping mutex.ErrInvalid, as
// registry.Register reports it; a name provided twice, and a parent or a
// redis.UniversalClient that the application lacks, fail it as fx reports
// such mistakes. The Registry is closed by an OnStop hook that runs
// after those of the components that depend on it, since fx stops them in
// the reverse order of their construction; Lock calls still waiting then
// return mutex.ErrClosed. Leases still held stay valid until they are
// unlocked or expire.
//
// # Inheritance
//
// Inherit follows registry.Inherit: the child takes the parent's client and
// a copy of its Config, changed by override, and inherits the parent's
// decorators, which its own wrap. The parent is the Locker of that name in
// the application, so fx builds it first, and a missing parent fails
// fx.New as a missing dependency.
//
// # Names
//
// A name is any non-empty string; the tag that injects it quotes it as Go
// does, as in `name:"orders"`. Lock, LockFrom and Inherit with an empty
// name or parent, and LockFrom with a constructor that does not return a
// mutex.Config, return an option that fails fx.New with an error wrapping
// mutex.ErrInvalid. The Registry hands out the same Lockers by name, with
// Get, to code that picks a configuration at run time.
package distlockfx
