package mutex

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/bgretry"
)

const (
	// DefaultTTL is the lease time-to-live used when Config.TTL is zero.
	DefaultTTL = 10 * time.Second
	// MinTTL is the shortest accepted Config.TTL.
	MinTTL = 10 * time.Millisecond
	// DefaultReplicaTimeout is the ReplicaTimeout used when
	// Config.ReplicaTimeout is zero.
	DefaultReplicaTimeout = 100 * time.Millisecond
)

// Config configures a Mutex. The zero value is ready to use.
type Config struct {
	// Prefix starts every Redis key and channel the Mutex uses. It must not
	// contain '{' or '}' and is at most MaxPrefixLen bytes. Empty means
	// DefaultPrefix.
	Prefix string
	// TTL is how long a lease holds its keys without an Extend. Zero means
	// DefaultTTL; otherwise it must be at least MinTTL. It is rounded down to
	// whole milliseconds.
	TTL time.Duration
	// FIFO grants each key in the order the Lock calls reached Redis.
	FIFO bool
	// Replicas is how many replicas must acknowledge a grant or an Extend,
	// through WAIT, before it counts; zero turns the check off. A grant
	// that fewer replicas acknowledged is released, and Lock and TryLock
	// fail with an error wrapping ErrNotReplicated; such an Extend ends the
	// lease. It needs a *redis.Client (standalone or failover) or a
	// *redis.ClusterClient.
	Replicas int
	// ReplicaTimeout bounds the wait for the replicas' acknowledgement.
	// Zero means DefaultReplicaTimeout.
	ReplicaTimeout time.Duration
	// Owner labels the holder of the Mutex's grants, for people and tools
	// that look at held locks (see Inspect). It is recorded in every owner
	// token, at no extra cost in Redis calls, and takes no part in who
	// holds a lock. Empty means "<hostname>:<pid>". It is at most
	// MaxOwnerLen bytes of UTF-8 without control characters.
	Owner string
}

// Status is the state of a set of keys reported by Check.
type Status int

const (
	// Available means no key is held.
	Available Status = iota
	// Locked means every key is held.
	Locked
	// PartiallyLocked means some but not all keys are held.
	PartiallyLocked
)

func (s Status) String() string {
	switch s {
	case Available:
		return "available"
	case Locked:
		return "locked"
	case PartiallyLocked:
		return "partially locked"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Locker obtains leases on keys. *Mutex is the Redis implementation; the
// middleware packages wrap a Locker in another Locker.
type Locker interface {
	// Lock waits until every key is held by one new lease, or ctx ends.
	Lock(ctx context.Context, keys ...string) (Lease, error)
	// TryLock makes one attempt to hold every key.
	TryLock(ctx context.Context, keys ...string) (Lease, error)
	// Check reports whether the keys are held, without changing anything.
	Check(ctx context.Context, keys ...string) (Status, error)
}

// Lease is the ownership of a set of keys, from a grant until Unlock or until
// its validity runs out.
type Lease interface {
	// Keys returns the keys the lease holds, in the order they were given.
	Keys() []string
	// Token returns the owner token of the lease, random but for the
	// owner label at its end (see Config.Owner); on a Redis Cluster, that
	// of the slot group of its first key (each group of a lease on keys
	// of several hash slots is granted under a token of its own).
	Token() string
	// Fence returns the fencing token: it is greater than the fence of every
	// earlier grant of any of the lease's keys. On a Redis Cluster, for a
	// lease on keys of several hash slots, it is the fence of the first
	// key, FenceOf(Keys()[0]): use FenceOf for the others.
	Fence() int64
	// FenceOf returns the fencing token of key: greater than the fence of
	// every earlier grant of key. It equals Fence for a lease within one
	// Cluster hash slot (always, off a Cluster), and is 0 for a key the
	// lease does not hold.
	FenceOf(key string) int64
	// Extend resets the TTL of every key, if the lease still holds them all.
	Extend(ctx context.Context) error
	// Unlock releases every key the lease still holds.
	Unlock(ctx context.Context) error
	// Done is closed when the lease ends: unlocked, lost, or its validity
	// ran out.
	Done() <-chan struct{}
	// Err is nil while the lease is held, ErrReleased after Unlock and an
	// error wrapping ErrNotHeld once it was lost or expired.
	Err() error
}

// Mutex is a Locker on one Redis deployment. It is safe for concurrent use.
// Close it when done to stop its pub/sub connection.
//
// The Mutex holds what both of its modes share: keys, tokens, the pub/sub
// connection, leases and background work. How a lock is waited for,
// granted and released is the business of its mode: plain (a release
// wakes the local waiters of the key, who race for it) or FIFO (a release
// hands the key to the head of its Redis queue).
type Mutex struct {
	id     string // random, starts every owner token
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	ttlMS  any // the TTL in milliseconds, a decimal string
	mode   mode
	// sharded is "1" on a Redis Cluster, where the scripts announce
	// releases through sharded pub/sub when the server has it.
	sharded any
	// replicas must acknowledge a grant or an extension within
	// replicaTimeout (Config.Replicas); zero turns WAIT off.
	replicas       int
	replicaTimeout time.Duration
	// owner is Config.Owner or its default; tokenTail, which ends every
	// owner token, is the label escaped (see ownerTail).
	owner, tokenTail string

	mu       sync.Mutex
	sub      pubsub // started with the first subscription
	closed   bool
	stop     chan struct{}   // closed by Close
	bgCtx    context.Context // cancelled by Close
	bgCancel context.CancelFunc
	bg       sync.WaitGroup // background work, registered under mu
	batch    batcher        // sends the script calls
}

// mode is how a Mutex waits for, grants and releases locks.
type mode interface {
	// tryLock makes one attempt; it returns a *NotObtainedError if a key
	// is held.
	tryLock(ctx context.Context, keys, rkeys []string) (Lease, error)
	// lock waits for the keys.
	lock(ctx context.Context, keys, rkeys []string) (Lease, error)
	// check counts the keys that are held (or queued for).
	check(ctx context.Context, rkeys []string) (int64, error)
	// release runs the release script of l. It returns the number of keys
	// released, and whether the call may have been sent more than once.
	release(ctx context.Context, l *lease) (n int, resent bool, err error)
	// message handles a pub/sub message, or with an empty payload, a
	// subscription renewed after a reconnect.
	message(channel, payload string)
	// subscribedLocked is told that Redis confirmed a subscription that a
	// request waits for. m.mu is held.
	subscribedLocked(channel string)
	// closeLocked wakes every waiter so that it sees the Mutex closed.
	// m.mu is held.
	closeLocked()
}

var _ Locker = (*Mutex)(nil)

// New returns a Mutex using client. It fails with an error wrapping
// ErrInvalid for a nil client or a bad Config. New makes no Redis call.
func New(client redis.UniversalClient, cfg Config) (*Mutex, error) {
	if isNil(client) {
		return nil, invalidf("nil client")
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if len(prefix) > MaxPrefixLen {
		return nil, invalidf("prefix of %d bytes, longer than %d", len(prefix), MaxPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		if prefix[i] == '{' || prefix[i] == '}' {
			return nil, invalidf("prefix %q contains a brace", prefix)
		}
	}
	ttl := cfg.TTL
	switch {
	case ttl == 0:
		ttl = DefaultTTL
	case ttl < 0:
		return nil, invalidf("negative TTL %v", ttl)
	case ttl < MinTTL:
		return nil, invalidf("TTL %v shorter than %v", ttl, MinTTL)
	}
	ttl = ttl.Truncate(time.Millisecond)
	replicaTimeout := cfg.ReplicaTimeout
	switch {
	case cfg.Replicas < 0:
		return nil, invalidf("negative Replicas %d", cfg.Replicas)
	case replicaTimeout < 0:
		return nil, invalidf("negative ReplicaTimeout %v", replicaTimeout)
	case replicaTimeout == 0:
		replicaTimeout = DefaultReplicaTimeout
	case replicaTimeout < time.Millisecond:
		return nil, invalidf("ReplicaTimeout %v shorter than 1ms", replicaTimeout)
	}
	owner, err := checkOwner(cfg.Owner)
	if err != nil {
		return nil, err
	}
	if cfg.Replicas > 0 {
		switch client.(type) {
		case *redis.Client, *redis.ClusterClient:
		default:
			return nil, invalidf("Replicas needs a *redis.Client or *redis.ClusterClient, not %T", client)
		}
	}
	var id [9]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("new: random id: %w", err)
	}
	bgCtx, bgCancel := context.WithCancel(context.Background())
	m := &Mutex{
		id:             base64.RawURLEncoding.EncodeToString(id[:]),
		owner:          owner,
		tokenTail:      ownerTail(owner),
		stop:           make(chan struct{}),
		bgCtx:          bgCtx,
		bgCancel:       bgCancel,
		client:         client,
		prefix:         prefix,
		ttl:            ttl,
		ttlMS:          strconv.FormatInt(ttl.Milliseconds(), 10),
		replicas:       cfg.Replicas,
		replicaTimeout: replicaTimeout.Truncate(time.Millisecond),
		sharded:        "0",
	}
	m.batch = batcher{client: client, inFlightMax: maxInFlight}
	if _, ok := client.(*redis.ClusterClient); ok {
		m.sharded = "1"
	}
	if cfg.FIFO {
		m.mode = newFIFO(m)
	} else {
		m.mode = newPlain(m)
	}
	return m, nil
}

// driftFor returns the clock drift allowance of the Redlock algorithm for
// keys set to expire after validity: 1% of it plus 2ms for the
// granularity of Redis expiry.
func driftFor(validity time.Duration) time.Duration {
	return validity/100 + 2*time.Millisecond
}

func isNil(c redis.UniversalClient) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// TTL returns the lease time-to-live in use.
func (m *Mutex) TTL() time.Duration { return m.ttl }

// Prefix returns the key prefix in use.
func (m *Mutex) Prefix() string { return m.prefix }

// Owner returns the owner label recorded with the Mutex's grants
// (Config.Owner or its default).
func (m *Mutex) Owner() string { return m.owner }

// FIFO reports whether the Mutex grants keys in request order.
func (m *Mutex) FIFO() bool {
	_, ok := m.mode.(*fifo)
	return ok
}

// TryLock makes one attempt to hold every key. It returns a
// *NotObtainedError (wrapping ErrNotObtained) if one of the keys is held,
// an error wrapping ErrInvalid for bad keys, ErrClosed after Close, and the
// Redis error otherwise.
func (m *Mutex) TryLock(ctx context.Context, keys ...string) (Lease, error) {
	rkeys, err := m.start(ctx, keys)
	if err != nil {
		return nil, err
	}
	if groups := m.slotGroups(keys, rkeys); groups != nil {
		return m.lockGroups(ctx, keys, groups, true)
	}
	return m.mode.tryLock(ctx, keys, rkeys)
}

// Lock waits until every key is held by one new lease, or ctx ends. The wait
// is woken by the release announcement of a key, and re-checks a key no later
// than the expiry of its holder's TTL. Waiters of one Mutex wait for a key
// in arrival order, so a release costs one attempt per Mutex; without FIFO,
// a waiter that another key blocks does not hold up the waiters behind it.
//
// A wait that ends with ctx, during an attempt too, returns a
// *NotObtainedError for which both errors.Is(err, ErrNotObtained) and
// errors.Is(err, ctx.Err()) hold. Bad keys give an error wrapping
// ErrInvalid, a closed Mutex ErrClosed, and a Redis failure its error.
func (m *Mutex) Lock(ctx context.Context, keys ...string) (Lease, error) {
	rkeys, err := m.start(ctx, keys)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &NotObtainedError{Cause: err}
	}
	if groups := m.slotGroups(keys, rkeys); groups != nil {
		return m.lockGroups(ctx, keys, groups, false)
	}
	return m.mode.lock(ctx, keys, rkeys)
}

// start checks the arguments of Lock and TryLock and maps the keys to Redis
// keys.
func (m *Mutex) start(ctx context.Context, keys []string) ([]string, error) {
	rkeys, err := m.checkKeys(keys)
	if err != nil {
		return nil, err
	}
	if err := m.checkReentrant(ctx, keys); err != nil {
		return nil, err
	}
	if err := m.checkOpen(); err != nil {
		return nil, err
	}
	return rkeys, nil
}

// Check reports whether the keys are held: Available if none is, Locked if
// all are, PartiallyLocked otherwise.
func (m *Mutex) Check(ctx context.Context, keys ...string) (Status, error) {
	rkeys, err := m.checkKeys(keys)
	if err != nil {
		return Available, err
	}
	var n int64
	if groups := m.slotGroups(keys, rkeys); groups != nil && !m.FIFO() {
		n, err = m.checkGroups(ctx, groups)
	} else {
		n, err = m.mode.check(ctx, rkeys)
	}
	if err != nil {
		return Available, fmt.Errorf("check: %w", err)
	}
	switch {
	case n == 0:
		return Available, nil
	case int(n) == len(rkeys):
		return Locked, nil
	}
	return PartiallyLocked, nil
}

// Close stops the Mutex: waiting Lock calls return ErrClosed, the pub/sub
// connection is closed, and Close waits for background work to end. Leases
// already granted stay valid and can still be extended and unlocked.
//
// Waiting Lock calls leave their FIFO queues as they return, with one
// request of at most a second each. Background releases of acquires whose
// outcome is unknown (their reply was lost), and the queue leaves of Lock
// calls that ended, are retried until they succeed; Close lets an attempt
// in flight finish, for up to a second (with the go-redis client's
// ContextTimeoutEnabled; otherwise a read in flight ends with its
// ReadTimeout), and stops the retries still pending: the keys such an
// acquire took, if any, expire with their TTL, and a queue entry left
// behind is dropped within FIFOLiveness. An acquire whose outcome becomes
// unknown after Close gets one release attempt of at most a second.
func (m *Mutex) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.mode.closeLocked()
	m.closed = true
	close(m.stop)
	sub := m.sub
	m.mu.Unlock()
	m.bgCancel()
	var err error
	if sub != nil {
		err = sub.close()
	}
	m.bg.Wait()
	return err
}

func (m *Mutex) checkOpen() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// subscribeLocked asks for the channels' messages. m.mu must be held.
func (m *Mutex) subscribeLocked(channels ...string) {
	if m.sub == nil {
		m.sub = newPubSub(m)
	}
	m.sub.subscribeLocked(channels)
}

// unsubscribeLocked ends the subscription to channels. m.mu must be held.
func (m *Mutex) unsubscribeLocked(channels ...string) {
	if m.sub != nil {
		m.sub.unsubscribeLocked(channels)
	}
}

// goLocked runs f in a goroutine that Close waits for, with a context that
// Close cancels. After Close it does nothing and reports false. m.mu must
// be held.
func (m *Mutex) goLocked(f func(ctx context.Context)) bool {
	if m.closed {
		return false
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		f(m.bgCtx)
	}()
	return true
}

// closedAttemptTimeout bounds the clean-up of a Lock that ends after Close.
const closedAttemptTimeout = bgretry.ClosedAttemptTimeout

// untilDone runs req in the background until it succeeds (see
// bgretry.Until). Close stops the retries, but lets the first attempt
// finish for up to closedAttemptTimeout, as much as it would give it after
// Close: then req makes one attempt, at once and in the caller's
// goroutine, of at most closedAttemptTimeout.
func (m *Mutex) untilDone(req func(ctx context.Context) error) {
	m.mu.Lock()
	started := m.goLocked(func(ctx context.Context) { bgretry.Until(ctx, req) })
	m.mu.Unlock()
	if !started {
		bgretry.Once(req)
	}
}

// revokeTTL is how long a revocation marker outlives the give-up of a
// request with an unknown outcome: long enough for a request held up in
// the network or in a paused Redis to reach it.
func (m *Mutex) revokeTTL() string {
	return strconv.FormatInt(max(2*m.ttl, 10*time.Second).Milliseconds(), 10)
}

// markerKey names the revocation marker of a token, set when its requester
// gave up on a request whose outcome is unknown. It shares the hash tag of
// rkey, the first key of the request.
func markerKey(rkey, token string) string { return rkey + ":x:" + token }

// releaseUnknown gives up an acquire with token whose outcome is unknown:
// in the background, until it succeeds, it releases what the acquire
// took and marks the token revoked, so that an acquire that reaches Redis
// after that takes nothing.
func (m *Mutex) releaseUnknown(rkeys []string, token string) {
	keys := make([]string, len(rkeys), len(rkeys)+1)
	copy(keys, rkeys)
	keys = append(keys, markerKey(rkeys[0], token))
	ttl := m.revokeTTL()
	m.untilDone(func(ctx context.Context) error {
		return releaseTokenScript.Run(ctx, m.client, keys, token, ttl, m.sharded).Err()
	})
}

// releaseLate releases a lease that was granted but whose validity had run
// out by the time the reply arrived, so it was never handed out.
func (m *Mutex) releaseLate(l *lease) {
	m.untilDone(func(ctx context.Context) error {
		_, _, err := m.mode.release(ctx, l)
		return err
	})
}

func isRedisReply(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && !errors.Is(err, redis.ErrClosed)
}

// newToken returns a new owner token: the Mutex's id, a dot, kind, 128
// random bits from crypto/rand, and the owner label (see ownerTail). The
// scripts find the Mutex id before the first dot, a token's end in a lock
// value at the ':' before the fence, and its end in a wake-up message at
// the space before the fence; the label adds none of these characters.
func (m *Mutex) newToken(kind string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	enc := base64.RawURLEncoding
	var sb strings.Builder
	sb.Grow(len(m.id) + 1 + len(kind) + enc.EncodedLen(len(b)) + len(m.tokenTail))
	sb.WriteString(m.id)
	sb.WriteByte('.')
	sb.WriteString(kind)
	var e [22]byte
	enc.Encode(e[:], b[:])
	sb.Write(e[:])
	sb.WriteString(m.tokenTail)
	return sb.String(), nil
}

// ended turns an error of a request made for a Lock into the error to
// return: a *NotObtainedError if ctx ended meanwhile, since the caller's
// wait ended whatever Redis did.
func ended(ctx context.Context, last *NotObtainedError, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return notObtained(last, cerr)
	}
	return fmt.Errorf("acquire: %w", err)
}

func notObtained(last *NotObtainedError, cause error) error {
	e := &NotObtainedError{Cause: cause}
	if last != nil {
		e.Key, e.RetryAfter = last.Key, last.RetryAfter
	}
	return e
}

// grantOrBlocked decodes the {1, fence} or {0, index, pttl} reply of an
// acquire script sent at start. A grant whose validity ran out before the
// reply arrived is released at once and reported as a nil lease and a nil
// *NotObtainedError. The release runs in the background, so the caller must
// not send token again: a request of it could find the grant still there
// and take it back just before the release removes it (a FIFO waiter
// queues again under a new token).
func (m *Mutex) grantOrBlocked(res []any, keys, rkeys []string, token string, start time.Time) (*lease, *NotObtainedError, error) {
	if len(res) < 2 {
		return nil, nil, fmt.Errorf("acquire: unexpected reply %v", res)
	}
	if ok, _ := res[0].(int64); ok == 1 {
		fenceStr, _ := res[1].(string)
		fence, err := strconv.ParseInt(fenceStr, 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("acquire: bad fence %q", fenceStr)
		}
		l := m.newLease(keys, rkeys, token, fenceStr, fence, start)
		if l.Err() != nil {
			m.releaseLate(l)
			return nil, nil, nil
		}
		return l, nil, nil
	}
	blocked := &NotObtainedError{}
	if idx, _ := res[1].(int64); idx >= 1 && int(idx) <= len(keys) {
		blocked.Key = keys[idx-1]
	}
	if len(res) > 2 {
		if pttl, _ := res[2].(int64); pttl > 0 {
			blocked.RetryAfter = time.Duration(pttl) * time.Millisecond
		}
	}
	return nil, blocked, nil
}

// tried turns the outcome of TryLock's one attempt into its result: a
// grant whose reply came after its validity (released already) is an error.
func tried(l *lease, blocked *NotObtainedError, err error) (Lease, error) {
	switch {
	case err != nil:
		return nil, fmt.Errorf("acquire: %w", err)
	case l != nil:
		return l, nil
	case blocked != nil:
		return nil, blocked
	}
	return nil, fmt.Errorf("acquire: reply arrived after the lease's validity: %w", os.ErrDeadlineExceeded)
}

// leaseOrNil keeps a nil *lease from becoming a non-nil Lease.
func leaseOrNil(l *lease) Lease {
	if l == nil {
		return nil
	}
	return l
}
