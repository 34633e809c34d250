package mutex

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// DefaultTTL is the lease time-to-live used when Config.TTL is zero.
	DefaultTTL = 10 * time.Second
	// MinTTL is the shortest accepted Config.TTL.
	MinTTL = 10 * time.Millisecond
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
	// Token returns the random owner token of the lease.
	Token() string
	// Fence returns the fencing token: it is greater than the fence of every
	// earlier grant of any of the lease's keys.
	Fence() int64
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

// The scripts, one per operation, each with the helpers of lib.lua in front.
var (
	//go:embed scripts/lib.lua
	libSrc string
	//go:embed scripts/acquire.lua
	acquireSrc    string
	acquireScript = redis.NewScript(libSrc + acquireSrc)
	//go:embed scripts/release.lua
	releaseSrc    string
	releaseScript = redis.NewScript(libSrc + releaseSrc)
	//go:embed scripts/extend.lua
	extendSrc    string
	extendScript = redis.NewScript(libSrc + extendSrc)
	//go:embed scripts/fifo_lock.lua
	fifoLockSrc    string
	fifoLockScript = redis.NewScript(libSrc + fifoLockSrc)
	//go:embed scripts/fifo_claim.lua
	fifoClaimSrc    string
	fifoClaimScript = redis.NewScript(libSrc + fifoClaimSrc)
	//go:embed scripts/fifo_release.lua
	fifoReleaseSrc    string
	fifoReleaseScript = redis.NewScript(libSrc + fifoReleaseSrc)
	//go:embed scripts/fifo_refresh.lua
	fifoRefreshSrc    string
	fifoRefreshScript = redis.NewScript(libSrc + fifoRefreshSrc)
	//go:embed scripts/fifo_leave.lua
	fifoLeaveSrc    string
	fifoLeaveScript = redis.NewScript(libSrc + fifoLeaveSrc)
	//go:embed scripts/release_token.lua
	releaseTokenSrc    string
	releaseTokenScript = redis.NewScript(libSrc + releaseTokenSrc)
)

// Mutex is a Locker on one Redis deployment. It is safe for concurrent use.
// Close it when done to stop its pub/sub connection.
type Mutex struct {
	id     string // random, starts every owner token
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	ttlMS  string
	drift  time.Duration
	fifo   bool

	mu     sync.Mutex
	queues map[string]*keyQueue // by Redis key; a queue exists while it has waiters
	sub    *subscriber          // started with the first queue
	tokens map[string]*waiter   // FIFO waiters by token
	// forget holds, by lock key, the tokens of granted FIFO waiters whose
	// deadline entries the next renewal removes.
	forget map[string][]string
	// renewing tells whether the FIFO deadline renewal loop runs.
	renewing bool
	stop     chan struct{} // closed by Close
	// wakeChannel is where FIFO releases wake this Mutex's waiters;
	// wakeBase is its name without the id. wakeReady is closed once the
	// subscription to it is confirmed.
	wakeBase, wakeChannel string
	wakeReady             chan struct{}
	wakeSubscribed        bool
	closed                bool
	bg                    sync.WaitGroup // background releases of unknown outcomes
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
	var id [9]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("mutex: id: %w", err)
	}
	m := &Mutex{
		id:     base64.RawURLEncoding.EncodeToString(id[:]),
		fifo:   cfg.FIFO,
		tokens: make(map[string]*waiter),
		forget: make(map[string][]string),
		stop:   make(chan struct{}),
		client: client,
		prefix: prefix,
		ttl:    ttl,
		ttlMS:  strconv.FormatInt(ttl.Milliseconds(), 10),
		// The clock drift allowance of the Redlock algorithm: 1% of the TTL
		// plus 2ms for the granularity of Redis expiry.
		drift:     ttl/100 + 2*time.Millisecond,
		queues:    make(map[string]*keyQueue),
		wakeReady: make(chan struct{}),
	}
	m.wakeBase = prefix + ":w:"
	m.wakeChannel = m.wakeBase + m.id
	return m, nil
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

// FIFO reports whether the Mutex grants keys in request order.
func (m *Mutex) FIFO() bool { return m.fifo }

// TryLock makes one attempt to hold every key. It returns a
// *NotObtainedError (wrapping ErrNotObtained) if one of the keys is held,
// an error wrapping ErrInvalid for bad keys, and the Redis error otherwise.
func (m *Mutex) TryLock(ctx context.Context, keys ...string) (Lease, error) {
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
	if m.fifo {
		l, blocked, err := m.fifoLock(ctx, keys, rkeys, "", true)
		if err != nil {
			return nil, err
		}
		if l == nil {
			return nil, blocked
		}
		return l, nil
	}
	l, blocked, err := m.attempt(ctx, keys, rkeys)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, blocked
	}
	return l, nil
}

// Lock waits until every key is held by one new lease, or ctx ends. The wait
// is woken by the release announcement of a key, and re-checks a key no later
// than the expiry of its holder's TTL. Waiters of one Mutex queue for a key in
// arrival order, so a release costs one attempt per Mutex.
//
// A wait that ends with ctx returns a *NotObtainedError for which both
// errors.Is(err, ErrNotObtained) and errors.Is(err, ctx.Err()) hold. Bad keys
// give an error wrapping ErrInvalid, a closed Mutex ErrClosed, and a Redis
// failure its error.
func (m *Mutex) Lock(ctx context.Context, keys ...string) (Lease, error) {
	rkeys, err := m.checkKeys(keys)
	if err != nil {
		return nil, err
	}
	if err := m.checkReentrant(ctx, keys); err != nil {
		return nil, err
	}
	if m.fifo {
		return m.waitFIFO(ctx, keys, rkeys)
	}
	return m.wait(ctx, keys, rkeys)
}

// Check reports whether the keys are held: Available if none is, Locked if
// all are, PartiallyLocked otherwise.
func (m *Mutex) Check(ctx context.Context, keys ...string) (Status, error) {
	rkeys, err := m.checkKeys(keys)
	if err != nil {
		return Available, err
	}
	var n int64
	if m.fifo {
		n, err = m.checkFIFO(ctx, rkeys)
	} else {
		n, err = m.client.Exists(ctx, rkeys...).Result()
	}
	if err != nil {
		return Available, fmt.Errorf("mutex: check: %w", err)
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
func (m *Mutex) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.stop)
	for _, q := range m.queues {
		for _, w := range q.waiters {
			w.signal()
		}
	}
	sub := m.sub
	m.mu.Unlock()
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

// attempt runs the acquire script once. It returns a lease when granted, or a
// *NotObtainedError naming the held key, or an error.
func (m *Mutex) attempt(ctx context.Context, keys, rkeys []string) (*lease, *NotObtainedError, error) {
	token, err := m.newToken()
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	res, err := acquireScript.Run(ctx, m.client, rkeys, token, m.ttlMS).Slice()
	if err != nil {
		if !isRedisReply(err) {
			// The script may have run without its reply reaching us: release
			// in the background so the keys do not stay held until the TTL.
			m.releaseUnknown(rkeys, token)
		}
		return nil, nil, fmt.Errorf("mutex: acquire: %w", err)
	}
	return m.grantOrBlocked(res, keys, rkeys, token, start)
}

// releaseUnknown releases keys that an acquire with token may have taken
// (FIFO mode uses leave instead). The owner token makes this safe whether or
// not the acquire happened.
func (m *Mutex) releaseUnknown(rkeys []string, token string) {
	m.background(min(m.ttl, 5*time.Second), func(ctx context.Context) {
		// The fence is unknown, so match the stored value by its token.
		_ = releaseTokenScript.Run(ctx, m.client, rkeys, token).Err()
	})
}

// background runs f in a goroutine that Close waits for, with a context
// that ends after timeout.
func (m *Mutex) background(timeout time.Duration, f func(ctx context.Context)) {
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		f(ctx)
	}()
}

func isRedisReply(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && !errors.Is(err, redis.ErrClosed)
}

// newToken returns a new owner token: the Mutex's id, a dot, and 128 random
// bits from crypto/rand.
func (m *Mutex) newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mutex: token: %w", err)
	}
	return m.id + "." + base64.RawURLEncoding.EncodeToString(b[:]), nil
}
