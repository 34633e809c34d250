package semaphore

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/lockcore"
	"github.com/distlock/distlock/mutex"
)

const (
	// DefaultPrefix is the key prefix used when Config.Prefix is empty.
	DefaultPrefix = "distlock:sem"
	// DefaultTTL is the permit time-to-live used when Config.TTL is zero.
	DefaultTTL = mutex.DefaultTTL
)

// Config configures a Semaphore.
type Config struct {
	// Prefix starts every Redis key and channel the Semaphore uses. It
	// must not contain '{' or '}' and is at most mutex.MaxPrefixLen bytes.
	// Empty means DefaultPrefix.
	Prefix string
	// TTL is how long a permit is held without an Extend. Zero means
	// DefaultTTL; otherwise it must be at least mutex.MinTTL. It is
	// rounded down to whole milliseconds.
	TTL time.Duration
	// Permits is how many leases may hold one key at a time; at least 1.
	// Every Semaphore on the same keys must use the same value.
	Permits int
	// FIFO grants the permits of each key in the order the Lock calls
	// reached Redis.
	FIFO bool
}

// Semaphore is a mutex.Locker whose keys each have Permits permits: a
// lease holds one permit of each of its keys. It is safe for concurrent
// use. Close it when done to stop its pub/sub connection.
type Semaphore struct {
	core    *lockcore.Core
	permits int
	fifo    bool
}

var _ mutex.Locker = (*Semaphore)(nil)

// New returns a Semaphore using client. It fails with an error wrapping
// mutex.ErrInvalid for a nil client or a bad Config (Permits below 1, a
// bad TTL or Prefix). New makes no Redis call.
func New(client redis.UniversalClient, cfg Config) (*Semaphore, error) {
	if lockcore.IsNil(client) {
		return nil, lockcore.Invalidf("nil client")
	}
	if cfg.Permits < 1 {
		return nil, lockcore.Invalidf("%d permits, want at least 1", cfg.Permits)
	}
	prefix, err := lockcore.CheckPrefix(cfg.Prefix, DefaultPrefix)
	if err != nil {
		return nil, err
	}
	ttl, err := lockcore.CheckTTL(cfg.TTL, DefaultTTL)
	if err != nil {
		return nil, err
	}
	core, err := lockcore.New(lockcore.Config{
		Client: client,
		Prefix: prefix,
		TTL:    ttl,
		Mode:   "s" + strconv.Itoa(cfg.Permits),
		Queued: cfg.FIFO,
	})
	if err != nil {
		return nil, err
	}
	return &Semaphore{core: core, permits: cfg.Permits, fifo: cfg.FIFO}, nil
}

// Permits returns the number of permits per key.
func (s *Semaphore) Permits() int { return s.permits }

// TTL returns the permit time-to-live in use.
func (s *Semaphore) TTL() time.Duration { return s.core.TTL() }

// Prefix returns the key prefix in use.
func (s *Semaphore) Prefix() string { return s.core.Prefix() }

// FIFO reports whether the Semaphore grants permits in request order.
func (s *Semaphore) FIFO() bool { return s.fifo }

// Lock waits until it holds one permit of every key, all taken at once by
// one script, or ctx ends. A wait that ends with ctx returns a
// *mutex.NotObtainedError for which both errors.Is(err,
// mutex.ErrNotObtained) and errors.Is(err, ctx.Err()) hold. Bad keys give
// an error wrapping mutex.ErrInvalid, a closed Semaphore mutex.ErrClosed,
// and a Redis failure its error.
func (s *Semaphore) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	return s.core.Lock(ctx, lockcore.KindPermit, keys...)
}

// TryLock makes one attempt to hold a permit of every key. It returns a
// *mutex.NotObtainedError (wrapping mutex.ErrNotObtained) when a key has
// no permit left (in FIFO mode also when Lock calls wait for it), naming
// that key, with RetryAfter set to the time until its first holder
// expires.
func (s *Semaphore) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	return s.core.TryLock(ctx, lockcore.KindPermit, keys...)
}

// Check reports whether the keys have permits left, without changing
// anything: a key is counted as locked when it has no permit left (in FIFO
// mode also when Lock calls wait for it). It returns mutex.Available if no
// key is locked, mutex.Locked if all are, mutex.PartiallyLocked otherwise.
func (s *Semaphore) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	return s.core.Check(ctx, lockcore.KindPermit, keys...)
}

// Close stops the Semaphore: waiting Lock calls leave their queues and
// return mutex.ErrClosed, the pub/sub connection is closed, and Close waits
// for background work to end. Leases already granted stay valid and can
// still be extended and unlocked.
func (s *Semaphore) Close() error { return s.core.Close() }
