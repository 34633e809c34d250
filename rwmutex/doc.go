// Package rwmutex provides distributed reader/writer locks on Redis: any
// number of readers share a key, a writer holds it alone.
//
// An *RWMutex hands out two mutex.Lockers, Reader() and Writer(), so the
// decorators and helpers of the other packages work on both unchanged:
// middleware.Retry and middleware.AutoExtend, mutex.WithLock, keyed,
// httpmw, grpcmw and otellock:
//
//	rw, err := rwmutex.New(client, rwmutex.Config{TTL: 10 * time.Second})
//	...
//	err = mutex.WithLock(ctx, rw.Reader(), "catalog", readCatalog)
//	err = mutex.WithLock(ctx, rw.Writer(), "catalog", rebuildCatalog)
//
// # Holders
//
// The holders of a key, readers and writer alike, are a sorted set,
// "<prefix>:{<key>}", of owner tokens scored by their expiry on the Redis
// server's clock (TIME); the hash "<prefix>:{<key>}:f" names the writer
// and keeps the fences. Each reader has its own TTL: a crashed reader, or
// writer, stops blocking the others when its TTL runs out, since every
// script first drops the holders whose expiry has passed. Extend and
// Unlock act on the lease's own token only; Done closes before Redis can
// drop the lease, as for a mutex lease.
//
// # Fairness
//
// Every Lock that cannot be granted at once joins the key's queue,
// "<prefix>:{<key>}:q", in the order the calls reached Redis (waiting
// writers are also in "<prefix>:{<key>}:qw"). A writer is granted at the
// head of the queue once no one holds the key; a reader once no writer
// holds the key or waits ahead of it. So a waiting writer blocks the
// readers that come after it (writers do not starve), and the readers
// queued behind a writer go, together, right after it, before a writer
// that came after them (readers do not starve either). TryLock never
// overtakes a waiter: a reader's fails while a writer waits, a writer's
// while anyone holds or waits for the key.
//
// A release wakes exactly the waiters that may go now, with one message
// per process on the wake channel of its RWMutex, "<prefix>:w:<id>": the
// writer at the head, or every reader ahead of the first waiting writer.
// Each RWMutex renews the queue entries of its waiters every
// mutex.FIFOLiveness/3 (in "<prefix>:{<key>}:d"), which also wakes waiters
// whose wake-up was lost or whose way a crashed holder blocked; a waiter
// whose process died is dropped from the queue within
// mutex.FIFOLiveness, and a cancelled Lock leaves it at once. A waiter
// that a holder blocks also tries again when that holder's TTL runs out.
//
// Lock does not detect reentrancy: a writer's Lock under a lease of the
// same RWMutex on the same key, or a reader's with a writer queued, waits
// for itself until its context ends. mutex.WithLock, nested on the same
// Locker and keys, joins the held lease instead.
//
// # Fencing tokens
//
// Fence is the server's clock in microseconds at the grant, raised if
// needed above the last fence granted on each key, so fences strictly
// increase per key across readers and writers. A writer passes its fence
// to the storage it writes, which refuses a write with a lower fence than
// one it has seen; a reader's fence orders its reads among the writes.
//
// # Multiple keys and Redis Cluster
//
// A Lock of several keys holds all of them or none: one script joins or
// takes every key, so the queues of all keys order their common waiters
// alike, and multi-key Locks cannot deadlock. On a Redis Cluster, the keys
// of one call must share a hash slot, which distinct keys do only by
// chance (the whole escaped key is the hash tag, as in package mutex):
// keys of several slots get an error wrapping mutex.ErrInvalid before any
// Redis call. Check accepts keys of any slots.
//
// # Errors
//
// Bad input (a nil client, a bad TTL or Prefix, no keys, an empty,
// oversized or repeated key) gets an error wrapping mutex.ErrInvalid
// before any Redis call. Contention gives a *mutex.NotObtainedError
// (mutex.ErrNotObtained), a lease that is gone mutex.ErrNotHeld or
// mutex.ErrReleased, a closed RWMutex mutex.ErrClosed; every other error
// comes from Redis.
//
// No key stays behind: a key's Redis keys are deleted when its last holder
// releases it and nobody waits, and otherwise expire with their last
// holder or waiter; revocation markers of requests given up with an
// unknown outcome, "<prefix>:{<key>}:x:<token>", expire after twice the
// TTL (at least 10s).
package rwmutex
