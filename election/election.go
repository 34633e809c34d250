package election

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/lockcore"
	"github.com/distlock/distlock/mutex"
)

const (
	// DefaultPrefix is the key prefix used when Config.Prefix is empty.
	DefaultPrefix = "distlock:election"
	// MaxValueLen is the longest value, in bytes, that a candidate may
	// campaign with.
	MaxValueLen = 4096
)

// ErrNoLeader reports that no leader is recorded for a name.
var ErrNoLeader = errors.New("election: no leader")

// Config configures an Election. The zero value is ready to use.
type Config struct {
	// Prefix starts the Redis key and channel of each name's leader
	// record. It must not contain '{' or '}' and is at most
	// mutex.MaxPrefixLen bytes. Empty means DefaultPrefix.
	Prefix string
	// TTL is how long a leader record lasts without renewal when the
	// term's lease does not report its validity deadline (see
	// mutex.Deadline; the leases of package mutex, semaphore and rwmutex
	// do). Zero means mutex.DefaultTTL; otherwise it must be at least
	// mutex.MinTTL.
	TTL time.Duration
}

// Leader is the leader of one term.
type Leader struct {
	// Value is what the leader campaigned with.
	Value string
	// Fence is the term's fencing token, the Fence of its lease: each
	// term of a name has a greater one than the terms before it.
	Fence int64
	// Since is when the term was first recorded, by the Redis server's
	// clock.
	Since time.Time
}

// Election runs leader elections on names, each a key of a mutex.Locker.
// It is safe for concurrent use. Close it when done to stop its pub/sub
// connection and its observers.
type Election struct {
	locker mutex.Locker
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	ps     *lockcore.PubSub

	mu     sync.Mutex
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup // observers
}

//go:embed scripts/announce.lua
var announceSrc string

//go:embed scripts/refresh.lua
var refreshSrc string

//go:embed scripts/resign.lua
var resignSrc string

var (
	announceScript = redis.NewScript(announceSrc)
	refreshScript  = redis.NewScript(refreshSrc)
	resignScript   = redis.NewScript(resignSrc)
)

// New returns an Election whose terms are leases of l on the names, and
// whose leader records live in client. l must exclude itself: at most one
// lease per key at a time, like a *mutex.Mutex. New fails with an error
// wrapping mutex.ErrInvalid for a nil Locker or client or a bad Config,
// and makes no Redis call.
func New(l mutex.Locker, client redis.UniversalClient, cfg Config) (*Election, error) {
	if lockcore.IsNil(l) {
		return nil, lockcore.Invalidf("nil Locker")
	}
	if lockcore.IsNil(client) {
		return nil, lockcore.Invalidf("nil client")
	}
	prefix, err := lockcore.CheckPrefix(cfg.Prefix, DefaultPrefix)
	if err != nil {
		return nil, err
	}
	ttl, err := lockcore.CheckTTL(cfg.TTL, mutex.DefaultTTL)
	if err != nil {
		return nil, err
	}
	return &Election{
		locker: l,
		client: client,
		prefix: prefix,
		ttl:    ttl,
		ps:     lockcore.NewPubSub(client),
		stop:   make(chan struct{}),
	}, nil
}

// recordKey names the leader record of name, which is also the channel of
// its announcements.
func (e *Election) recordKey(name string) string {
	return lockcore.RedisKey(e.prefix, name) + ":leader"
}

func checkName(name string) error { return lockcore.CheckName("name", name) }

func checkValue(value string) error {
	if len(value) > MaxValueLen {
		return lockcore.Invalidf("value of %d bytes, longer than %d", len(value), MaxValueLen)
	}
	if !utf8.ValidString(value) {
		return lockcore.Invalidf("value is not valid UTF-8")
	}
	return nil
}

// Campaign waits until it holds name, as a lease of the Election's Locker,
// then records and announces value as the leader of the new term, and
// returns the term. It returns the error of the Locker's Lock (for a
// context that ends first, one matching both mutex.ErrNotObtained and
// ctx.Err()), an error wrapping mutex.ErrInvalid for an empty or oversized
// name or value, mutex.ErrClosed after Close, and the Redis error if the
// record cannot be written (the lease is then released).
//
// The term is extended in the background until Resign, and its record
// with it; Done closes when the term ends, lost or resigned, and the
// leader must then stop acting as one.
func (e *Election) Campaign(ctx context.Context, name, value string) (*Term, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := checkValue(value); err != nil {
		return nil, err
	}
	if err := e.checkOpen(); err != nil {
		return nil, err
	}
	lease, err := e.locker.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	t := &Term{e: e, name: name, value: value, lease: lease, fence: strconv.FormatInt(lease.Fence(), 10)}
	rec, err := announceScript.Run(ctx, e.client, []string{e.recordKey(name)}, t.fence, value, t.recordTTL()).Text()
	if err != nil {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mutex.UnlockTimeout)
		defer cancel()
		_ = lease.Unlock(uctx)
		if errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("campaign: a later term of %q is recorded: %w", name, mutex.ErrNotHeld)
		}
		return nil, fmt.Errorf("campaign: record the leader: %w", err)
	}
	if l, ok := parseRecord(rec); ok {
		t.since = l.Since
	}
	r, err := mutex.DefaultRenewer().Renew(t, mutex.RenewPolicy{})
	if err != nil {
		_ = t.Resign(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("campaign: %w", err)
	}
	t.mu.Lock()
	t.renewal = r
	t.mu.Unlock()
	return t, nil
}

// Leader returns the leader of name's current term, or ErrNoLeader if none
// is recorded, or if the Locker reports name free: a record can outlive a
// Campaign that gave up while writing it. It does not campaign; it costs
// a read of the record and a Check of the Locker.
func (e *Election) Leader(ctx context.Context, name string) (Leader, error) {
	if err := checkName(name); err != nil {
		return Leader{}, err
	}
	rec, err := e.client.Get(ctx, e.recordKey(name)).Result()
	if errors.Is(err, redis.Nil) {
		return Leader{}, ErrNoLeader
	}
	if err != nil {
		return Leader{}, fmt.Errorf("leader: %w", err)
	}
	l, ok := parseRecord(rec)
	if !ok {
		return Leader{}, fmt.Errorf("leader: unexpected record %q", rec)
	}
	if held, err := e.held(ctx, name); err != nil {
		return Leader{}, fmt.Errorf("leader: %w", err)
	} else if !held {
		return Leader{}, ErrNoLeader
	}
	return l, nil
}

// held reports whether the Locker holds name for someone. A record of a
// term whose name is free is left by a Campaign that gave up while its
// record was still on its way to Redis: no leader holds that term.
func (e *Election) held(ctx context.Context, name string) (bool, error) {
	st, err := e.locker.Check(ctx, name)
	if err != nil {
		return false, err
	}
	return st != mutex.Available, nil
}

// parseRecord decodes "<fence> <since µs> <value>".
func parseRecord(rec string) (Leader, bool) {
	parts := strings.SplitN(rec, " ", 3)
	if len(parts) != 3 {
		return Leader{}, false
	}
	fence, err1 := strconv.ParseInt(parts[0], 10, 64)
	since, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return Leader{}, false
	}
	return Leader{Value: parts[2], Fence: fence, Since: time.UnixMicro(since)}, true
}

func (e *Election) checkOpen() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return mutex.ErrClosed
	}
	return nil
}

// Close stops the Election: the channels of Observe are closed, and its
// pub/sub connection too. Terms already won stay held, renewed and
// resignable; a Campaign after Close fails with mutex.ErrClosed.
func (e *Election) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.stop)
	e.mu.Unlock()
	err := e.ps.Close()
	e.wg.Wait()
	return err
}

// Run campaigns for name with value and runs fn while it leads. fn's
// context records the term (mutex.LeaseFromContext returns it), and is
// cancelled when the term is lost (context.Cause then wraps
// mutex.ErrNotHeld), and when ctx ends. When fn returns after losing the
// term, Run campaigns again; when it returns while still leading, Run
// resigns and returns fn's error. Run returns when ctx ends: fn's error if
// any, else a *mutex.NotObtainedError matching both mutex.ErrNotObtained
// and ctx.Err(). Bad input (nil e or fn, a bad name or
// value) gives an error wrapping mutex.ErrInvalid before any Redis call.
func Run(ctx context.Context, e *Election, name, value string, fn func(ctx context.Context) error) error {
	switch {
	case e == nil:
		return lockcore.Invalidf("nil Election")
	case fn == nil:
		return lockcore.Invalidf("nil function")
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := checkValue(value); err != nil {
		return err
	}
	for {
		term, err := e.Campaign(ctx, name, value)
		if err != nil {
			return err
		}
		fnErr := lead(ctx, e, term, fn)
		lost := term.Err() != nil
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mutex.UnlockTimeout)
		rerr := term.Resign(rctx)
		cancel()
		if ctx.Err() != nil {
			if fnErr != nil {
				return fnErr
			}
			return &mutex.NotObtainedError{Cause: ctx.Err()}
		}
		if lost {
			continue
		}
		if errors.Is(rerr, mutex.ErrNotHeld) {
			rerr = nil // lost as fn returned: nothing to add
		}
		return errors.Join(fnErr, rerr)
	}
}

// lead runs fn with a context that records term and is cancelled when
// term ends.
func lead(ctx context.Context, e *Election, term *Term, fn func(ctx context.Context) error) error {
	fctx, cancel := context.WithCancelCause(mutex.ContextWithLease(ctx, e.locker, term))
	defer cancel(context.Canceled)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-term.Done():
			cause := term.Err()
			if cause == nil {
				cause = mutex.ErrNotHeld
			}
			cancel(fmt.Errorf("term lost: %w", cause))
		case <-quit:
		}
	})
	defer wg.Wait()
	defer close(quit)
	return fn(fctx)
}
