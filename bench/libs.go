package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidislock"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// The libraries compared, in report order.
const (
	libDistlock     = "distlock"
	libDistlockFIFO = "distlock-fifo"
	libRedsync      = "redsync"
	libRedislock    = "redislock"
	libRueidislock  = "rueidislock"
)

// allLibs lists every library the runner knows.
var allLibs = []string{libDistlock, libDistlockFIFO, libRedsync, libRedislock, libRueidislock}

// libNotes says how each library is set up, for the report.
var libNotes = map[string]string{
	libDistlock:     "distlock mutex.Mutex, plain mode: waiters are woken by pub/sub; go-redis v9 client",
	libDistlockFIFO: "distlock mutex.Mutex with Config{FIFO: true}: a Redis queue per key hands the key over in arrival order",
	libRedsync:      "go-redsync/redsync/v4 with its goredis/v9 pool (one pool, quorum 1): SET NX, polling every -poll while waiting; no FIFO mode",
	libRedislock:    "bsm/redislock: Obtain with LinearBackoff(-poll) while waiting; no FIFO mode",
	libRueidislock:  "rueidis/rueidislock, KeyMajority 1 (single Redis), NoLoopTracking, TryNextAfter 1s (with the default 20ms, Lock calls hang under load: an acquire slower than 20ms fails and then waits for an invalidation that never comes): waiters are woken by client-side-caching invalidations; its own rueidis client; no FIFO mode",
}

// locker is one library as the workers drive it. lock returns a handle
// that unlock takes back; the handle is the library's own value (a lease,
// a mutex, a cancel function), so the adapter adds no allocation per
// operation.
type locker interface {
	lock(ctx context.Context, key string) (any, error)
	unlock(ctx context.Context, h any) error
	// hold locks key for the auto-extension scenario: the lease is kept
	// alive (by the library, or by an extension loop the adapter runs)
	// until released.
	hold(ctx context.Context, key string) (heldLease, error)
	close()
}

// heldLease is a lease of the auto-extension scenario.
type heldLease interface {
	// lost reports whether the lease ended without being released.
	lost() bool
	release(ctx context.Context) error
}

// libConfig is what a worker needs to set up a library.
type libConfig struct {
	addr     string
	prefix   string
	ttl      time.Duration
	poll     time.Duration
	poolSize int
}

func newLocker(name string, cfg libConfig) (locker, error) {
	switch name {
	case libDistlock, libDistlockFIFO:
		return newDistlock(cfg, name == libDistlockFIFO)
	case libRedsync:
		return newRedsync(cfg), nil
	case libRedislock:
		return newRedislock(cfg), nil
	case libRueidislock:
		return newRueidislock(cfg)
	}
	return nil, fmt.Errorf("unknown library %q (known: %v)", name, allLibs)
}

func goRedisClient(cfg libConfig) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: cfg.addr, PoolSize: cfg.poolSize})
}

// distlock

type distlockLocker struct {
	client *redis.Client
	m      *mutex.Mutex
	auto   mutex.Locker
}

func newDistlock(cfg libConfig, fifo bool) (*distlockLocker, error) {
	c := goRedisClient(cfg)
	m, err := mutex.New(c, mutex.Config{Prefix: cfg.prefix, TTL: cfg.ttl, FIFO: fifo})
	if err != nil {
		c.Close()
		return nil, err
	}
	return &distlockLocker{client: c, m: m, auto: middleware.Chain(m, middleware.AutoExtend())}, nil
}

func (d *distlockLocker) lock(ctx context.Context, key string) (any, error) {
	l, err := d.m.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (d *distlockLocker) unlock(ctx context.Context, h any) error {
	return h.(mutex.Lease).Unlock(ctx)
}

func (d *distlockLocker) hold(ctx context.Context, key string) (heldLease, error) {
	l, err := d.auto.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	return distlockHeld{l}, nil
}

func (d *distlockLocker) close() {
	_ = d.m.Close()
	_ = d.client.Close()
}

type distlockHeld struct{ l mutex.Lease }

func (h distlockHeld) lost() bool                        { return h.l.Err() != nil }
func (h distlockHeld) release(ctx context.Context) error { return h.l.Unlock(ctx) }

// redsync

type redsyncLocker struct {
	client *redis.Client
	rs     *redsync.Redsync
	opts   []redsync.Option
	ext    *extender
}

func newRedsync(cfg libConfig) *redsyncLocker {
	c := goRedisClient(cfg)
	return &redsyncLocker{
		client: c,
		rs:     redsync.New(goredis.NewPool(c)),
		opts: []redsync.Option{
			redsync.WithExpiry(cfg.ttl),
			redsync.WithTries(math.MaxInt32),
			redsync.WithRetryDelay(cfg.poll),
		},
		ext: newExtender(cfg.ttl / 3),
	}
}

// lock creates a redsync.Mutex per call, as redsync is used: a Mutex holds
// the value of one acquisition and is not meant for concurrent use.
func (r *redsyncLocker) lock(ctx context.Context, key string) (any, error) {
	m := r.rs.NewMutex(key, r.opts...)
	if err := m.LockContext(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func (r *redsyncLocker) unlock(ctx context.Context, h any) error {
	ok, err := h.(*redsync.Mutex).UnlockContext(ctx)
	if err == nil && !ok {
		err = errors.New("redsync: unlock found the lock not held")
	}
	return err
}

func (r *redsyncLocker) hold(ctx context.Context, key string) (heldLease, error) {
	m := r.rs.NewMutex(key, r.opts...)
	if err := m.LockContext(ctx); err != nil {
		return nil, err
	}
	h := &manualHeld{
		extend: func(ctx context.Context) (bool, error) {
			ok, err := m.ExtendContext(ctx)
			var taken *redsync.ErrTaken
			switch {
			case ok:
				return true, nil
			case errors.As(err, &taken), errors.Is(err, redsync.ErrExtendFailed), errors.Is(err, redsync.ErrLockAlreadyExpired), err == nil:
				return false, nil
			}
			// A Redis error: the lock may still be held; the next pass retries.
			return true, err
		},
		unlock: func(ctx context.Context) error { return r.unlock(ctx, m) },
	}
	r.ext.add(h)
	return h, nil
}

func (r *redsyncLocker) close() {
	r.ext.stop()
	_ = r.client.Close()
}

// redislock

type redislockLocker struct {
	client *redis.Client
	rl     *redislock.Client
	ttl    time.Duration
	poll   time.Duration
	ext    *extender
}

func newRedislock(cfg libConfig) *redislockLocker {
	c := goRedisClient(cfg)
	return &redislockLocker{client: c, rl: redislock.New(c), ttl: cfg.ttl, poll: cfg.poll, ext: newExtender(cfg.ttl / 3)}
}

func (r *redislockLocker) lock(ctx context.Context, key string) (any, error) {
	l, err := r.rl.Obtain(ctx, key, r.ttl, &redislock.Options{RetryStrategy: redislock.LinearBackoff(r.poll)})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (r *redislockLocker) unlock(ctx context.Context, h any) error {
	return h.(*redislock.Lock).Release(ctx)
}

func (r *redislockLocker) hold(ctx context.Context, key string) (heldLease, error) {
	l, err := r.rl.Obtain(ctx, key, r.ttl, &redislock.Options{RetryStrategy: redislock.LinearBackoff(r.poll)})
	if err != nil {
		return nil, err
	}
	h := &manualHeld{
		extend: func(ctx context.Context) (bool, error) {
			err := l.Refresh(ctx, r.ttl, nil)
			if errors.Is(err, redislock.ErrNotObtained) {
				return false, nil
			}
			// nil, or a Redis error after which the next pass retries.
			return true, err
		},
		unlock: l.Release,
	}
	r.ext.add(h)
	return h, nil
}

func (r *redislockLocker) close() {
	r.ext.stop()
	_ = r.client.Close()
}

// rueidislock

// rueidisTryNextAfter replaces rueidislock's default TryNextAfter of 20ms,
// which bounds each SET of an acquire. With the default, an acquire whose
// reply takes longer (as with 64 or more goroutines on one client here)
// fails, and the Lock call then waits for a client-side-caching
// invalidation of a key that nobody changes: it hangs until its context
// ends.
const rueidisTryNextAfter = time.Second

type rueidislockLocker struct {
	l rueidislock.Locker
}

func newRueidislock(cfg libConfig) (*rueidislockLocker, error) {
	l, err := rueidislock.NewLocker(rueidislock.LockerOption{
		ClientOption:   rueidis.ClientOption{InitAddress: []string{cfg.addr}},
		KeyPrefix:      cfg.prefix,
		KeyValidity:    cfg.ttl,
		KeyMajority:    1,
		NoLoopTracking: true,
		TryNextAfter:   rueidisTryNextAfter,
	})
	if err != nil {
		return nil, fmt.Errorf("rueidislock: %w", err)
	}
	return &rueidislockLocker{l: l}, nil
}

func (r *rueidislockLocker) lock(ctx context.Context, key string) (any, error) {
	_, cancel, err := r.l.WithContext(ctx, key)
	if err != nil {
		return nil, err
	}
	return cancel, nil
}

// unlock calls the lock's cancel function, which releases the key and
// returns once the release was sent; rueidislock reports no error.
func (r *rueidislockLocker) unlock(_ context.Context, h any) error {
	h.(context.CancelFunc)()
	return nil
}

func (r *rueidislockLocker) hold(ctx context.Context, key string) (heldLease, error) {
	lctx, cancel, err := r.l.WithContext(context.WithoutCancel(ctx), key)
	if err != nil {
		return nil, err
	}
	return &rueidisHeld{ctx: lctx, cancel: cancel}, nil
}

func (r *rueidislockLocker) close() { r.l.Close() }

type rueidisHeld struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func (h *rueidisHeld) lost() bool { return h.ctx.Err() != nil }

func (h *rueidisHeld) release(context.Context) error {
	if h.ctx.Err() != nil {
		h.cancel()
		return errors.New("rueidislock: lock lost before release")
	}
	h.cancel()
	return nil
}

// manualHeld is a lease that an extender keeps alive, for the libraries
// without automatic extension (redsync, redislock).
type manualHeld struct {
	// extend returns false when the lock is found taken or gone.
	extend func(ctx context.Context) (bool, error)
	unlock func(ctx context.Context) error
	gone   atomic.Bool
	// mu keeps an extension and the release from running together, as the
	// libraries' lock values are not safe for concurrent use.
	mu       sync.Mutex
	released bool
}

func (h *manualHeld) lost() bool { return h.gone.Load() }

func (h *manualHeld) release(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	if h.gone.Load() {
		return errors.New("lock lost before release")
	}
	return h.unlock(ctx)
}

// renew extends h unless it was released or lost.
func (h *manualHeld) renew(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released || h.gone.Load() {
		return
	}
	if ok, _ := h.extend(ctx); !ok {
		h.gone.Store(true)
	}
}

// extender extends manualHeld leases every interval from a fixed number of
// goroutines, each owning a share of the leases, the way an application
// without automatic extension would run an extension loop.
type extender struct {
	interval time.Duration
	mu       sync.Mutex
	shards   [extenderShards][]*manualHeld
	next     int
	started  bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

const extenderShards = 16

func newExtender(interval time.Duration) *extender {
	return &extender{interval: interval}
}

func (e *extender) add(h *manualHeld) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.shards[e.next%extenderShards] = append(e.shards[e.next%extenderShards], h)
	e.next++
	if e.started {
		return
	}
	e.started = true
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	for i := range extenderShards {
		e.wg.Go(func() { e.loop(ctx, i) })
	}
}

func (e *extender) loop(ctx context.Context, shard int) {
	t := time.NewTicker(e.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		hs := e.shards[shard]
		e.mu.Unlock()
		for _, h := range hs {
			if ctx.Err() != nil {
				return
			}
			h.renew(ctx)
		}
	}
}

// stop ends the extension loops and waits for them.
func (e *extender) stop() {
	e.mu.Lock()
	cancel := e.cancel
	e.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	e.wg.Wait()
}
