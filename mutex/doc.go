// Package mutex provides distributed locks on Redis.
//
// A [Mutex] grants [Lease]s on one or more keys. Lock waits for the keys,
// TryLock makes one attempt, and Check reports whether keys are held:
//
//	m, err := mutex.New(client, mutex.Config{TTL: 10 * time.Second})
//	...
//	lease, err := m.Lock(ctx, "invoice:42")
//	if err != nil { ... }
//	defer lease.Unlock(ctx)
//	// Pass lease.Fence() to the storage you protect.
//
// # Leases
//
// A lease holds its keys for the Mutex's TTL from the start of the acquire
// attempt. Extend resets the TTL; Unlock releases the keys. Both compare the
// lease's random owner token (128 bits from crypto/rand) atomically in Lua, so
// a lease that expired can never extend or release a lock that another owner
// has taken since. Done is closed when the lease ends: after Unlock, after an
// Extend found a key taken, or when the validity deadline passes without an
// Extend. The validity deadline is the start of the attempt that granted (or
// last extended) the lease plus the TTL minus a drift allowance of 1% of the
// TTL plus 2ms, measured on the local monotonic clock, so Done closes before
// Redis can expire the keys. Err tells why the lease ended: ErrReleased after
// Unlock, an error wrapping ErrNotHeld when it was lost or ran out.
//
// The middleware package adds automatic extension and retries.
//
// # Scoped locking
//
// WithLock (and WithLockMany) locks, runs a function with a context that is
// cancelled when the lease is lost (context.Cause tells why), keeps the lease
// extended meanwhile, and unlocks afterwards, even if the function panics.
// RunLocked does the same for a lease obtained by the caller. Both record the
// lease in the function's context: a nested WithLock on keys the context
// already holds through the same Locker joins the held lease instead of
// waiting for itself, and a nested Lock or TryLock of such a key on the
// Mutex fails at once with ErrReentrant.
//
// # Renewal
//
// A Renewer extends leases in the background: one goroutine keeps them in
// a heap by due time, and renewals that fall due together go to Redis in
// one pipeline per client. RunLocked and WithLock extend their leases
// through the process-wide Renewer (DefaultRenewer), and so does
// middleware.AutoExtend unless given another; a lease already extended in
// the background (see AutoExtender) is only watched. A failed renewal is
// retried until the lease's deadline; one that finds a key taken ends the
// lease at once. Deadline and IsAutoExtended find what they need behind a
// lease's decorators (see Unwrapper).
//
// # Waiting
//
// Lock does not poll. A release announces itself on a Redis pub/sub channel
// named like the key; each Mutex holds one pub/sub connection shared by all its
// waiters, subscribed to a key's channel while someone waits for it. The
// goroutines of one Mutex that wait for a key queue locally in arrival order,
// and only the first of them that claims the key tries Redis, so a release
// costs one attempt per waiting Mutex, however many goroutines wait. A waiter
// for several keys claims all of them until an attempt finds one held; from
// then on it waits for that key only, and the waiters behind it may take its
// other keys meanwhile: a free key never waits behind a busy one. A lost
// announcement never strands a waiter: it re-checks when the holder's TTL
// runs out. A release by a Mutex whose own goroutines wait for the key
// wakes the first of them at once, without waiting for its announcement to
// come back: without FIFO, a waiter of the releasing process may so take
// the key before the waiters of other processes (barging); FIFO mode keeps
// the order of arrival across processes.
//
// A wait that ends with its context returns a *NotObtainedError for which
// both errors.Is(err, ErrNotObtained) and errors.Is(err, ctx.Err()) hold,
// also when the context ends while a request to Redis is in flight.
//
// # Lost replies
//
// A request whose reply is lost has an unknown outcome. Every script is
// safe to send again with the same arguments, as go-redis does after a lost
// reply unless Options.MaxRetries is -1: an acquire that finds its own
// token's grant returns that grant, a FIFO entry keeps its place, and a
// release sent again that finds the keys gone, or taken by a waiter it
// woke, reports success if its reply still arrived within the lease's
// validity: until then only the lease's own release, or a loss of data in
// Redis, can have removed them. (So if Redis loses data, by a failover or a
// restart, while go-redis sends a release again, Unlock may report success
// where it would otherwise report ErrNotHeld.) When a Lock or TryLock gives up on an acquire
// whose outcome is unknown, the Mutex releases in the background whatever
// the acquire's token holds and marks the token revoked, retrying until
// it succeeds or Close: an acquire that reaches Redis only after that
// takes nothing. The revocation marker "<lock key>:x:<token>" expires after
// twice the TTL, and at least 10s.
//
// A lease is returned only while its validity lasts: a grant whose reply
// arrives after its deadline is released at once, and Lock tries again
// (TryLock fails with an error wrapping os.ErrDeadlineExceeded). Err compares
// the deadline with the clock itself, so it never reports a lease as held
// past its deadline.
//
// # Batching
//
// A Mutex sends its script calls (acquire, release, extend and the FIFO
// scripts) at once while it has fewer than eight requests in flight, each
// on a connection of the client's pool, exactly as go-redis sends a
// command. Beyond that, the calls made meanwhile collect in one batch,
// which goes out as a pipeline, in one write on one connection, as soon as
// a request in flight returns: an idle or lightly used Mutex adds no
// latency, and a busy one needs far fewer round trips and system calls per
// call than one connection per call. On a Cluster, go-redis splits a batch
// by node. Every call in a batch keeps its own context: a caller whose
// context ends returns at once, a call that was not sent yet is dropped,
// and a call already sent has an unknown outcome, handled as below. A
// batch runs until the last of its callers' deadlines, or without one if
// a caller has none; a goroutine of the Mutex sends batches while calls
// keep coming, and ends when none waits.
//
// # FIFO mode
//
// With Config.FIFO set, each key is granted strictly in the order in which
// Lock calls reached Redis, across processes and Mutexes. Every Lock call
// joins a queue per key in Redis (a sorted set scored by the server's clock
// at arrival). A release hands the lock to the head of the queue in the
// same script and tells it with a message on the wake channel of the head's
// Mutex, so one process wakes per grant, and Redis commands per grant do not
// grow with the number of waiters. The lock handed over expires after
// FIFOLiveness unless its new holder confirms it with an Extend; until then
// its lease is valid for FIFOLiveness, less a drift allowance of 1% plus
// 2ms, from the waiter's last request that Redis ran while it was still
// queued. When at least half of that is left as the message arrives, as it
// is unless the message was slow, Lock returns at once and confirms in the
// background: the handoff costs no extra round trip, whatever the TTL.
// Otherwise Lock confirms before it returns. (A waiter for several keys is
// woken instead and claims its keys itself once it heads all its queues.)
//
// A grant belongs to one queue entry: a waiter whose entry was dropped (its
// renewals could not reach Redis in time) joins again under a new token, and
// a late message about a grant to its old entry is ignored, so it never
// takes a lock that has since gone to someone else.
// TryLock never jumps a non-empty queue, and Check reports a key as held
// while it has a holder or a queue.
//
// Nothing gets stuck: a cancelled waiter leaves its queues at once. Each
// Mutex renews the queue entries of its waiters every FIFOLiveness/3; a
// waiter whose process died or lost its connection is dropped at most
// FIFOLiveness (1.2s) after its last renewal, a lock handed to it expires
// FIFOLiveness after the handover, and within one more renewal period the
// queue moves on: 1.6s in all, whatever the TTL. The same renewal wakes the
// head of a queue whose lock is free, which recovers from a lost wake-up and
// from a holder that crashed, as soon as its TTL runs out; a waiter whose
// handover message was lost finds the lock handed to it when it next claims.
// Queue keys expire 2×FIFOLiveness after the last renewal, so none outlives
// its waiters, and none is left one renewal period after a queue drains.
//
// A multi-key Lock in FIFO mode joins the queue of every key in one script,
// so all queues order their common waiters alike, and a waiter is granted
// only at the head of all its queues with every key free: Lock(ctx, "a",
// "b") excludes Lock(ctx, "a"), and Lock(ctx, "a", "b") and Lock(ctx, "b",
// "a") cannot deadlock. A key reserved for a multi-key waiter stays free
// until its other keys are free too. FIFO and non-FIFO Mutexes exclude each
// other on the same keys, but only FIFO callers keep their order: use one
// mode per key prefix.
//
// # Multiple keys
//
// Lock(ctx, "a", "b", "c") holds all three keys or none: one script checks
// and takes them, so a failed attempt leaves none held.
//
// In FIFO mode a key also has the queue "<lock key>:q" and the deadline set
// "<lock key>:d", in the same hash slot, while waiters queue for it.
//
// # Redis Cluster
//
// With a *redis.ClusterClient, every key is its own hash tag, so the keys
// of one call usually live in several hash slots, which no script can
// reach at once. Lock, TryLock and Check then group the keys by slot. Each
// group is taken atomically, in one script on its shard, exactly as above;
// the groups are taken one after the other in one global order, by slot
// and then by key, and a Lock waits for each group while it holds the ones
// before it (extending them every TTL/3), so that multi-key calls on
// overlapping keys, in any order and from any process, cannot deadlock.
// In FIFO mode such a waiter queues for each group in the same order. A
// failure, a TryLock that finds a group held, or a Lock whose context
// ends, releases the groups held already. What is atomic is one slot
// group, not the whole set: another caller, and Check, may see a moment
// when some groups of a call are held and others not (Check then reports
// PartiallyLocked), though no caller ever holds a key of another's lease.
// A Lock that loses a group it holds while it waits for the next (its
// keys expired while Redis could not be reached) releases the others and
// starts again. The lease's validity ends with the first of its groups'.
// A Ring client gets no grouping: its multi-key calls must stay on one
// shard.
//
// While a slot migrates, a call on its keys may be redirected more often
// than go-redis's ClusterOptions.MaxRedirects allows, or told TRYAGAIN by
// a script whose keys are split between the two nodes. The Mutex then
// reloads go-redis's map of the cluster and sends the call again, for
// about a second, before it returns that reply as the error; the scripts
// tell such a re-send from a new request.
//
// On Redis 7 and later, releases and FIFO wake-ups on a Cluster go through
// sharded pub/sub (SPUBLISH, SSUBSCRIBE), on channels in the lock key's
// slot, so only the shard that owns a key carries its messages, instead of
// every node: one cluster bus message per release (to the shard's replica)
// where PUBLISH sends one to every other node. A Mutex holds one sharded
// pub/sub connection per node that serves keys its waiters wait for. When
// a slot moves, Redis ends its subscriptions, and the Mutex subscribes on
// the slot's new node; after a failover, it follows the promoted replica.
// Each time, its waiters look at their keys again, as a message may have
// been missed meanwhile. Older servers get PUBLISH and SUBSCRIBE, as off a
// Cluster. A Cluster user needs SPUBLISH, SSUBSCRIBE and SUNSUBSCRIBE in
// its ACL (see the README).
//
// # Fencing tokens
//
// A lease is no proof of exclusion by itself: a process paused past its
// validity may still act. Fence returns a number to hand to the protected
// resource, which should reject any write whose fence is lower than one it
// has already seen.
//
// The fence is the Redis server's clock (TIME) in microseconds at the grant,
// taken in the same script that grants, so it costs no stored state.
// Fences of one key strictly increase across every grant on one Redis
// server (after Unlock, the release script checks that the server's clock
// has passed the released fence, which almost always it already has, and
// waits a moment for it after a grant of
// the last couple of milliseconds; after expiry, the server's clock, which
// expires the keys, has moved on by the TTL), provided that:
//
//   - the server's wall clock never steps backwards (slewing time sync such as
//     chrony or ntpd in slew mode keeps this; a clock stepped back by d can
//     repeat fences granted within the last d);
//   - after a failover, the promoted replica's clock is not behind the old
//     primary's by more than the time the failover took;
//   - the keys are not lost while held (see below): a lost key breaks mutual
//     exclusion, not fence order, since fences do not depend on stored state.
//
// A release that finds the server's clock not past the lease's fence (the
// clock is stuck, or stepped back) would let the next grant repeat the
// fence: the release script then keeps the keys (in FIFO mode it does not
// hand them on either), which expire with their TTL, and Unlock fails with
// an error wrapping ErrClockStalled. A server whose keys expire by another clock than TIME, such as
// miniredis, whose keys expire when a test fast-forwards them, can repeat a
// fence at a grant after an expiry unless TIME moves too (see
// distlocktest.Advance).
//
// A multi-key lease within one hash slot (always, off a Cluster) has one
// fence, greater than the fences of all earlier grants of each of its keys.
// A lease on keys of several Cluster slots was granted on several servers,
// whose clocks differ: no one number is sure to be greater than every
// earlier grant of every key. Each of its keys has its own fence, from the
// grant of its slot group, returned by FenceOf(key); it is greater than
// the fences of all earlier grants of that key, so a store that checks the
// fence of each key it writes sees them strictly increase. Fence returns
// the fence of the lease's first key. FenceOf(key) equals Fence for a
// lease within one slot.
//
// # Safety conditions
//
// Mutual exclusion holds while Redis keeps its data: Redis must run with
// maxmemory-policy noeviction (or with the lock keys out of reach of
// eviction), and a server restarted without persistence, or a replica
// promoted before it received a grant, forgets the locks it held. Leases
// assume the local clock rate is close to the server's (the drift allowance
// covers 1%). Verify asks the servers and reports, wrapping ErrUnsafeServer,
// a maxmemory-policy that can evict held locks or a server older than 6.2.
//
// # Replicas
//
// Redis replicates asynchronously: a primary that fails right after a grant
// may be replaced by a replica that never received it, which then grants
// the same key again. Config.Replicas closes most of that window: after
// each grant and each Extend, the Mutex extends the keys and runs WAIT on
// the same connection, in one round trip, and counts the grant only when
// that many replicas acknowledged it within Config.ReplicaTimeout. A grant
// they did not acknowledge is released, and Lock and TryLock return an
// error wrapping ErrNotReplicated; an Extend they did not acknowledge ends
// the lease (its error matches ErrNotReplicated and ErrNotHeld). A FIFO
// handover is confirmed before Lock returns. On a Cluster, the replicas
// are those of the key's shard. WAIT makes a replica's copy likely, not
// certain: a replica can still lose an acknowledged write if it restarts
// without persistence before it is promoted.
//
// # Keys
//
// A key is a non-empty string of at most MaxKeyLen (512) bytes; a call takes
// at most MaxKeys (256) distinct keys. The Redis key for key k is
// "<prefix>:{<k escaped>}", where the escaping percent-encodes '%', '{', '}',
// ':' and every byte outside printable ASCII, so no two keys collide and the
// whole key is the Redis Cluster hash tag. The same name is the key's
// release channel; in FIFO mode each Mutex listens on its own wake channel,
// "<prefix>:w:<Mutex id>", instead (on a Cluster, one per lock key, in its
// slot: "<lock key>:w:<Mutex id>"). No other keys are stored but the FIFO
// queues and the revocation markers of lost replies, all of which expire by
// themselves.
//
// # Inspection
//
// Every owner token ends with the owner label of its Mutex (Config.Owner,
// by default "<hostname>:<pid>"), so the lock value names its holder at no
// extra cost. Inspect reads, for several keys in one pipeline, whether each
// is held, by which owner, token and fence, the TTL left and the length of
// its FIFO queue; List finds the keys of a prefix that are held or queued
// for, with SCAN; ForceUnlock releases a key held under a given token, for
// operators who know that its holder is gone. The distlock command
// (cmd/distlock) is built on them.
//
// # Errors
//
// Bad input (a nil client, a bad Config, no keys, an empty, oversized or
// repeated key) gets an error wrapping ErrInvalid before any Redis call.
// Contention gives ErrNotObtained, a lease that is gone ErrNotHeld or
// ErrReleased, a closed Mutex ErrClosed, locking a key that the context
// already holds ErrReentrant, a grant or Extend too few replicas
// acknowledged (Config.Replicas) ErrNotReplicated, a release refused
// because the server's clock has not passed the lease's fence
// ErrClockStalled, and Verify
// ErrUnsafeServer for a server setting that makes locks unsafe; every other
// error comes from Redis. The
// acquire, release and extend scripts are loaded again transparently when
// the server's script cache is flushed or the server restarts.
//
// go-redis bounds a call by its context's deadline only when the client has
// Options.ContextTimeoutEnabled set; otherwise its read and write timeouts
// apply. Set it so that a Lock, Extend or Unlock with a deadline returns in
// time when Redis is slow.
//
// Requires Redis 6.2 or later (or a compatible server that runs Lua scripts
// and pub/sub).
package mutex
