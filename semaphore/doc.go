// Package semaphore provides distributed counting semaphores on Redis: at
// most Permits leases hold a key at any time.
//
// A *Semaphore is a mutex.Locker, so the decorators and helpers of the
// other packages work on it unchanged: middleware.Retry and
// middleware.AutoExtend, mutex.WithLock, keyed, httpmw, grpcmw and
// otellock. Lock(ctx, "partner-api") waits for one permit of the key;
// Lock(ctx, "a", "b") takes one permit of each key, all or none, in one
// script:
//
//	sem, err := semaphore.New(client, semaphore.Config{Permits: 8, TTL: 10 * time.Second})
//	...
//	err = mutex.WithLock(ctx, sem, "partner-api", func(ctx context.Context) error {
//		return callPartner(ctx) // at most 8 at once, across every process
//	})
//
// # Permits
//
// The holders of a key are a sorted set, "<prefix>:{<key>}", of owner
// tokens scored by their expiry on the Redis server's clock (TIME). A
// permit lasts TTL from its grant unless extended, like a mutex lease: a
// crashed holder's permit comes back when its TTL runs out, since every
// script first drops the holders whose expiry has passed. Extend and
// Unlock act on the lease's own token only. A lease's Done closes, and Err
// wraps mutex.ErrNotHeld, before Redis can drop its permit: its validity
// ends TTL (less a drift allowance of 1% plus 2ms) after the start of the
// request that granted or last extended it, on the local clock.
//
// While Redis keeps its data, no more than Permits leases hold a key at
// once. Every Semaphore on a key must be configured with the same Permits
// and TTL.
//
// # Fencing tokens
//
// Fence is the server's clock in microseconds at the grant, raised if
// needed above the last fence granted on each of the lease's keys (kept in
// the hash "<prefix>:{<key>}:f" while the key has holders, and passed by
// the clock before it is deleted), so fences strictly increase per key
// across every grant, whichever permit it takes. A multi-key lease has one
// fence, greater than every earlier grant of each of its keys; FenceOf
// returns it for each key.
//
// # Waiting
//
// Lock does not poll. Without FIFO, a release is announced on a channel
// named like the key; the goroutines of one Semaphore that wait for a key
// queue locally, and a release wakes the first of them only, which tries
// Redis; if the grant leaves permits, it wakes the next. So a release
// costs one attempt per waiting Semaphore, not one per waiter, and
// waiters of different processes race for it. A waiter also tries again
// when the first holder in its way expires, which recovers from a lost
// announcement and from a crashed holder.
//
// With Config.FIFO, permits go in the order the Lock calls reached Redis:
// every Lock joins a queue per key, "<prefix>:{<key>}:q", scored by the
// server's clock at arrival, and only the head of the queue is granted, so
// no later request ever overtakes an earlier one; TryLock fails while the
// queue is not empty. A release wakes the head alone, with a message on
// the wake channel of its Semaphore, "<prefix>:w:<id>"; a grant that
// leaves a permit wakes the next head. Each Semaphore renews the queue
// entries of its waiters every mutex.FIFOLiveness/3 (in
// "<prefix>:{<key>}:d"), and the same renewal wakes a head whose wake-up
// was lost or whose way a crashed holder blocked: a waiter whose process
// died is dropped within mutex.FIFOLiveness. A cancelled Lock leaves its
// queues at once. FIFO and other Semaphores on the same keys respect each
// other's permits, but a release by a Semaphore without FIFO wakes FIFO
// waiters only at their next renewal: use one mode per prefix.
//
// Lock does not detect reentrancy: a Lock, under a lease of the same
// Semaphore on the same key, waits like any other, and in FIFO mode may
// wait for itself. mutex.WithLock, nested on the same Locker and keys,
// joins the held lease instead.
//
// # Redis Cluster
//
// The Redis key of key k is "<prefix>:{<k escaped>}", where the escaping
// (the same as package mutex's) percent-encodes '%', '{', '}', ':' and
// every byte outside printable ASCII, so the whole key is the Cluster hash
// tag and every Redis key of one semaphore key lives in one slot. A
// multi-key Lock or TryLock runs one script, so on a Redis Cluster its
// keys must share a hash slot, which distinct keys do only by chance: on a
// Cluster, lock one key per call. Keys of several slots get an error
// wrapping mutex.ErrInvalid before any Redis call. Check accepts keys of
// any slots. Off a Cluster, any keys go together.
//
// # Errors
//
// Bad input (a nil client, Permits below 1, a bad TTL or Prefix, no keys,
// an empty, oversized or repeated key) gets an error wrapping
// mutex.ErrInvalid before any Redis call. Contention gives a
// *mutex.NotObtainedError (mutex.ErrNotObtained), a lease that is gone
// mutex.ErrNotHeld or mutex.ErrReleased, a closed Semaphore
// mutex.ErrClosed; every other error comes from Redis.
//
// No key stays behind: the keys of a semaphore key are deleted when its
// last holder releases its permit and nobody waits, and otherwise expire
// with their last holder or waiter. Revocation markers of requests given
// up with an unknown outcome, "<prefix>:{<key>}:x:<token>", expire after
// twice the TTL (at least 10s).
package semaphore
