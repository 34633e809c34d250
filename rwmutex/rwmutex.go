package rwmutex

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/lockcore"
	"github.com/distlock/distlock/mutex"
)

const (
	// DefaultPrefix is the key prefix used when Config.Prefix is empty.
	DefaultPrefix = "distlock:rw"
	// DefaultTTL is the lease time-to-live used when Config.TTL is zero.
	DefaultTTL = mutex.DefaultTTL
)

// Config configures an RWMutex. The zero value is ready to use.
type Config struct {
	// Prefix starts every Redis key and channel the RWMutex uses. It must
	// not contain '{' or '}' and is at most mutex.MaxPrefixLen bytes.
	// Empty means DefaultPrefix.
	Prefix string
	// TTL is how long a reader or writer holds a key without an Extend.
	// Zero means DefaultTTL; otherwise it must be at least mutex.MinTTL. It
	// is rounded down to whole milliseconds.
	TTL time.Duration
}

// RWMutex is a distributed reader/writer lock per key: any number of
// readers share a key, a writer holds it alone. It is safe for concurrent
// use. Close it when done to stop its pub/sub connection and the renewals
// of its waiters' queue entries.
type RWMutex struct {
	core   *lockcore.Core
	reader *side
	writer *side
}

// side is the Locker of readers or of writers.
type side struct {
	rw   *RWMutex
	kind string
}

var _ mutex.Locker = (*side)(nil)

// New returns an RWMutex using client. It fails with an error wrapping
// mutex.ErrInvalid for a nil client or a bad Config. New makes no Redis
// call.
func New(client redis.UniversalClient, cfg Config) (*RWMutex, error) {
	if lockcore.IsNil(client) {
		return nil, lockcore.Invalidf("nil client")
	}
	prefix, err := lockcore.CheckPrefix(cfg.Prefix, DefaultPrefix)
	if err != nil {
		return nil, err
	}
	ttl, err := lockcore.CheckTTL(cfg.TTL, DefaultTTL)
	if err != nil {
		return nil, err
	}
	core, err := lockcore.New(lockcore.Config{Client: client, Prefix: prefix, TTL: ttl, Mode: "rw", Queued: true})
	if err != nil {
		return nil, err
	}
	rw := &RWMutex{core: core}
	rw.reader = &side{rw: rw, kind: lockcore.KindReader}
	rw.writer = &side{rw: rw, kind: lockcore.KindWriter}
	return rw, nil
}

// Reader returns the Locker of readers: its leases share their keys with
// other readers, and exclude writers. It returns the same Locker on every
// call.
func (rw *RWMutex) Reader() mutex.Locker { return rw.reader }

// Writer returns the Locker of writers: its leases hold their keys alone,
// excluding readers and other writers. It returns the same Locker on every
// call.
func (rw *RWMutex) Writer() mutex.Locker { return rw.writer }

// TTL returns the lease time-to-live in use.
func (rw *RWMutex) TTL() time.Duration { return rw.core.TTL() }

// Prefix returns the key prefix in use.
func (rw *RWMutex) Prefix() string { return rw.core.Prefix() }

// Close stops the RWMutex: waiting Lock calls of its readers and writers
// leave their queues and return mutex.ErrClosed, the pub/sub connection
// is closed, and Close waits for background work to end. Leases already
// granted stay valid and can still be extended and unlocked.
func (rw *RWMutex) Close() error { return rw.core.Close() }

// Lock waits until the lease holds every key, or ctx ends. A reader waits
// while a writer holds a key or waits for it ahead of the reader; a writer
// waits while anyone holds a key or waits for it ahead of the writer. A
// wait that ends with ctx returns a *mutex.NotObtainedError for which both
// errors.Is(err, mutex.ErrNotObtained) and errors.Is(err, ctx.Err()) hold.
// Bad keys give an error wrapping mutex.ErrInvalid, a closed RWMutex
// mutex.ErrClosed, and a Redis failure its error.
func (s *side) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	return s.rw.core.Lock(ctx, s.kind, keys...)
}

// TryLock makes one attempt to hold every key, without overtaking a Lock
// call that waits: it returns a *mutex.NotObtainedError when a key is held
// against it or a waiter is in its way (for a reader: a waiting writer).
func (s *side) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	return s.rw.core.TryLock(ctx, s.kind, keys...)
}

// Check reports, without changing anything, whether a TryLock of this
// side would find the keys in use: mutex.Available if none is,
// mutex.Locked if all are, mutex.PartiallyLocked otherwise.
func (s *side) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	return s.rw.core.Check(ctx, s.kind, keys...)
}
