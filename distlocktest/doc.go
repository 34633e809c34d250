// Package distlocktest helps the unit tests of code that takes distlock
// locks. It offers two tools.
//
// # An in-memory Locker
//
// A Locker is a mutex.Locker that needs no Redis, with the semantics of a
// *mutex.Mutex, and whose TTLs run on a Clock that the test moves:
//
//	clock := distlocktest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
//	locker, err := distlocktest.NewLocker(distlocktest.Options{Clock: clock, TTL: 10 * time.Second})
//	...
//	lease, err := locker.Lock(ctx, "invoice:42")
//	clock.Advance(10 * time.Second) // the lease expires: Done is closed
//
// Hand it to the code under test wherever that takes a mutex.Locker. What
// it shares with a Mutex:
//
//   - Lock, TryLock and Check on one key or several, all or nothing;
//     TryLock fails with a *mutex.NotObtainedError that names the held key
//     and its remaining TTL; Check returns a mutex.Status.
//   - Lock waits, and is granted its keys by the Unlock or the expiry that
//     frees them; a wait that ends with its context fails with a
//     *mutex.NotObtainedError that wraps the context's error too.
//   - A lease expires when the Clock reaches its deadline, the grant (or the
//     last Extend) plus the TTL: Done closes and Err wraps mutex.ErrNotHeld
//     with the message of a Mutex's lease; Extend and Unlock then fail with
//     it. Unlock gives mutex.ErrReleased when called again.
//   - Fences strictly increase per key (they are 1, 2, 3... in grant order
//     across the Locker); a multi-key lease has one fence, which FenceOf
//     returns for each of its keys.
//   - FIFO mode (Options.FIFO) grants each key in arrival order; TryLock
//     never jumps a queue, and Check counts a key with waiters as held.
//   - Errors: mutex.ErrInvalid for an empty, repeated or oversized key (the
//     Mutex's limits, mutex.MaxKeyLen and mutex.MaxKeys), mutex.ErrClosed
//     after Close, mutex.ErrReentrant for a key the context already holds
//     through a lease of the Locker (as mutex.WithLock records it).
//
// What it leaves out: there is no network, so no Redis errors, lost
// replies or replicas; the validity of a lease and the expiry of its keys
// are one instant, with no drift allowance; and its leases do not report
// a Deadline (mutex.Deadliner), which is on the Clock, not the wall clock:
// a mutex.Renewer, as used by mutex.WithLock and middleware.AutoExtend,
// extends them every mutex.FallbackExtendInterval of real time.
//
// Everything the Locker does happens in the call that causes it, with no
// goroutines of its own: when Clock.Advance or Unlock returns, the expired
// leases have ended and the waiters that could be granted have been.
// Locker.Waiting tells a test when its goroutines are queued.
//
// # The real Mutex on miniredis
//
// NewMiniredis starts a miniredis server and a client for mutex.New, so
// that a test runs the real Mutex and its Lua scripts without a
// redis-server. Advance moves time on that server: it fast-forwards the
// keys' TTLs and, if the test fixed the server's clock with mr.SetTime, the
// clock that the fences come from. Keys on miniredis expire only when the
// test fast-forwards them (the Mutex's leases still measure their validity
// on the local clock), and TIME reads the wall clock unless mr.SetTime set
// it. A release on a clock that has not moved past the lease's fence fails
// with an error wrapping mutex.ErrClockStalled.
//
// # Which to use
//
// Use a Locker to test the logic around locks: contention, waiting,
// ordering, leases that expire or are lost, and how the code reacts, fast
// and deterministically, without Redis. Use NewMiniredis to test the
// wiring: that the code builds its Mutex, its key prefix and its Redis
// client correctly, and works with the real scripts. Integration tests
// belong on a real redis-server: only it behaves like production in every
// respect.
package distlocktest
