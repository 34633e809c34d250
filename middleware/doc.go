// Package middleware decorates a mutex.Locker with behaviour that the Redis
// core leaves to layers: Retry repeats calls that failed for a transient
// reason, and AutoExtend renews leases in the background until they are
// unlocked.
//
// A Middleware is a func(mutex.Locker) mutex.Locker. Chain(core, A, B, C)
// builds the nested call A(B(C(core))): a call goes through A first and
// reaches core last, and a lease comes back through C, then B, then A. The
// recommended order puts Retry outside AutoExtend:
//
//	locker := middleware.Chain(m, middleware.Retry(), middleware.AutoExtend())
//	// locker is Retry(AutoExtend(m))
//
// so that a lease is renewed only once an acquire has succeeded, whichever
// attempt it took. The other order works too, since Retry returns leases
// unchanged.
//
// Retry's options set how many attempts a call gets, the delays between
// them, which a jpillora/backoff Backoff computes (min and max delay,
// factor, jitter), and whether contention is retried; its documentation
// maps the retry settings of redsync (WithTries, WithRetryDelay) and
// bsm/redislock (RetryStrategy) onto them.
//
// Decorators pass the context on unchanged, so the reentrancy rules of
// mutex.WithLock hold through any chain: code that already holds a key
// through the chain joins its lease (WithLock) or gets mutex.ErrReentrant
// (Lock, TryLock), never waits for itself. Decorated leases implement
// mutex.Unwrapper.
//
// AutoExtend renews leases from a Scheduler, which is the renewal engine of
// package mutex (mutex.Renewer): by default the process-wide one that
// mutex.RunLocked and mutex.WithLock use too, or one given with
// WithScheduler. It runs one goroutine only while there are leases to
// renew, and sends the renewals falling due together to Redis in one
// pipeline per client, each from a goroutine of its own so that a Redis
// that does not answer holds up no other. Unlock stops a lease's renewals
// without waiting for one in flight. Holding 10,000 leases with a 3s TTL
// (10,000 renewals per second) took 50 to 120 Redis round trips per
// second, two goroutines on average, and under 100 bytes per lease on top
// of the lease itself in BenchmarkAutoExtendSoak.
//
// Errors: bad options make every call of the decorated Locker fail with an
// error wrapping mutex.ErrInvalid before any Redis call, such as "mutex:
// invalid argument: auto-extend interval -1s, want > 0". Otherwise the
// errors are those of the wrapped Locker, wrapped so that errors.Is sees
// through them; a wrap adds only what the layer did, as in "retry: gave up
// after 5 attempts: ...", and only the mutex sentinel carries a package
// prefix (see Retry for retries that give up).
package middleware
