// Package otellock records OpenTelemetry traces and metrics for any
// mutex.Locker: how long callers wait for locks, which keys are contended,
// how long leases are held, and when leases are lost.
//
// Put the decorator outermost, so that its Lock span covers everything the
// inner layers do (retries, waits) and its lease wraps theirs:
//
//	locker := middleware.Chain(m, otellock.Middleware(), middleware.Retry(), middleware.AutoExtend())
//	// locker is otellock.Middleware()(middleware.Retry()(middleware.AutoExtend()(m)))
//
// where m is a *mutex.Mutex. Renewals made by AutoExtend in the background
// are not Extend calls of this layer: a failed one shows as a lost lease.
// Decorated leases implement mutex.Unwrapper, through which mutex.Deadline
// and mutex.IsAutoExtended find the validity deadline and the background
// extension of the inner leases.
//
// The decorated Locker and its leases return the errors of the inner ones
// unchanged, so errors.Is works as documented by package mutex.
//
// By default the global TracerProvider and MeterProvider are used (see
// WithTracerProvider and WithMeterProvider). Both use the instrumentation
// scope ScopeName, version Version.
//
// # Spans
//
// Every span has kind Internal and is a child of the span in the context
// passed to the call; the context given to the inner Locker or Lease carries
// the new span, so spans of instrumented Redis clients nest under it. The
// HTTP and gRPC middleware pass the request's context, so a lock taken for a
// request nests under the request's span.
//
//   - distlock.Lock covers the whole Lock call, waiting included, and
//     distlock.TryLock the single attempt. Attributes: distlock.lock.outcome
//     (obtained, not_obtained, cancelled, timeout or error),
//     distlock.lock.wait_duration (seconds), distlock.lock.fifo,
//     distlock.lock.key_count, the key attribute (below),
//     distlock.lock.fence when obtained, and the blocking key when a key was
//     found held.
//   - distlock.Check: distlock.lock.key_count, the key attribute and
//     distlock.lock.status (available, locked or partially_locked).
//   - distlock.Extend and distlock.Unlock, linked to the span that obtained
//     the lease: distlock.lock.outcome (ok, not_held, released, cancelled,
//     timeout or error), distlock.lock.key_count, distlock.lock.fence, the
//     key attribute, and on Unlock distlock.lock.hold_duration (seconds).
//
// The outcome cancelled means that the call's context was cancelled before
// the call was done, and timeout that its deadline passed first: for Lock,
// a wait budget that ran out, such as the one of mutex.WithLockWait or of
// WithWait in the HTTP and gRPC middleware.
//
// Contention is an outcome, not a failure: a Lock or TryLock that returns
// ErrNotObtained, and any call whose context ended, leaves the span status
// unset. Every other error (a Redis failure, bad input, ErrReentrant,
// ErrClosed, and ErrNotHeld or ErrReleased from Extend or Unlock) is recorded
// on the span, which gets status Error.
//
// A lease lost while held (its validity ran out, or another owner took a
// key: Err wraps mutex.ErrNotHeld) adds a distlock.lease.lost event to the
// span that was current when Lock was called, such as the request span, if
// it is still recording. Otherwise a distlock.LeaseLost span, child of the
// span that obtained the lease, records the loss with status Error. Both
// carry distlock.lock.hold_duration, distlock.lock.fence and the key
// attribute. Once Extend or Unlock of a lost lease has returned, its loss has
// been recorded.
//
// # Keys
//
// Keys may hold personal data such as user IDs, so by default spans carry
// distlock.lock.key_hash (and distlock.lock.blocking_key_hash): the first 16
// hex digits of the SHA-256 digest of each key (see HashKey). With
// WithKeyAttribute(KeyRaw) they carry distlock.lock.key (and
// distlock.lock.blocking_key) with the keys as given; with KeyOmitted, no
// key at all. Key attributes are string arrays, one element per key, in the
// order given to Lock. Unless keys are raw, recorded errors of the mutex
// package are reduced to their sentinel's message, since the full message may
// quote keys. Metrics never carry keys, so their cardinality stays bounded.
//
// # Metrics
//
//   - distlock.lock.wait.duration (histogram, s): duration of Lock and TryLock
//     calls, with distlock.lock.operation (lock or try_lock) and
//     distlock.lock.outcome.
//   - distlock.lock.acquisitions (counter, {acquisition}): Lock and TryLock
//     calls, with the same attributes.
//   - distlock.lock.hold.duration (histogram, s): time from the grant to
//     Unlock or loss, with distlock.lock.end (unlocked or lost).
//   - distlock.lock.held (up-down counter, {lease}): leases currently held.
//   - distlock.lock.lost (counter, {lease}): leases that ended by loss or
//     expiry rather than Unlock.
//   - distlock.lock.extend.failures (counter, {failure}): failed Extend calls,
//     with distlock.lock.outcome (not_held, released, cancelled, timeout or
//     error).
//
// # Watching leases
//
// To see a loss when it happens, a lease still held 10ms after its grant is
// watched by a goroutine that waits for its Done channel and records the
// end; a loss within those first 10ms is reported at their end. Leases
// released sooner, as most are, never start one. The goroutine ends with the
// lease: at Unlock, at a loss, or when its validity runs out (an
// auto-extended lease ends only at Unlock or a loss, so unlock every lease).
// When neither a recording span nor an enabled instrument observes the
// lease (no-op providers), no goroutine is started at all.
package otellock
