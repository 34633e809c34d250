package lockcore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/bgretry"
	"github.com/distlock/distlock/mutex"
)

// Liveness bounds how long a queue entry outlives its waiter: a waiter
// whose process died is dropped from its queues at most this long after
// its process last renewed it, every Liveness/3.
const Liveness = mutex.FIFOLiveness

// Kinds of tokens (see lib.lua).
const (
	KindPermit = "s"
	KindReader = "r"
	KindWriter = "w"
)

// Config configures a Core.
type Config struct {
	Client redis.UniversalClient
	// Prefix is validated already (see CheckPrefix).
	Prefix string
	// TTL is at least mutex.MinTTL.
	TTL time.Duration
	// Mode is "s<permits>" for a semaphore and "rw" for a read-write lock.
	Mode string
	// Queued makes waiters queue in Redis; otherwise they race for
	// releases announced on the resources' channels.
	Queued bool
}

// Core grants leases on resources in one mode. It is safe for concurrent
// use.
type Core struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	ttlMS  string
	mode   string
	queued bool
	id     string // random, starts every owner token
	// wakeBase followed by a Core's id names its wake channel.
	wakeBase string
	ps       *PubSub

	mu       sync.Mutex
	closed   bool
	stop     chan struct{}
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	plain plainState
	fifo  fifoState
}

// IsNil reports whether client is nil, or a nil pointer in an interface.
func IsNil(client any) bool {
	if client == nil {
		return true
	}
	v := reflect.ValueOf(client)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// CheckTTL validates a TTL as mutex.New does: zero means def.
func CheckTTL(ttl, def time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		ttl = def
	case ttl < 0:
		return 0, Invalidf("negative TTL %v", ttl)
	case ttl < mutex.MinTTL:
		return 0, Invalidf("TTL %v shorter than %v", ttl, mutex.MinTTL)
	}
	return ttl.Truncate(time.Millisecond), nil
}

// New returns a Core. It makes no Redis call.
func New(cfg Config) (*Core, error) {
	var id [9]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("random id: %w", err)
	}
	bgCtx, bgCancel := context.WithCancel(context.Background())
	c := &Core{
		client:   cfg.Client,
		prefix:   cfg.Prefix,
		ttl:      cfg.TTL,
		ttlMS:    strconv.FormatInt(cfg.TTL.Milliseconds(), 10),
		mode:     cfg.Mode,
		queued:   cfg.Queued,
		id:       base64.RawURLEncoding.EncodeToString(id[:]),
		wakeBase: cfg.Prefix + ":w:",
		ps:       NewPubSub(cfg.Client),
		stop:     make(chan struct{}),
		bgCtx:    bgCtx,
		bgCancel: bgCancel,
	}
	c.plain.queues = make(map[string]*plainQueue)
	c.fifo.waiters = make(map[string]*fifoWaiter)
	return c, nil
}

// TTL returns the lease time-to-live.
func (c *Core) TTL() time.Duration { return c.ttl }

// Prefix returns the key prefix.
func (c *Core) Prefix() string { return c.prefix }

// newToken returns a new owner token: the Core's id, a dot, kind, and 128
// random bits from crypto/rand.
func (c *Core) newToken(kind string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return c.id + "." + kind + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func (c *Core) checkOpen() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return mutex.ErrClosed
	}
	return nil
}

// TryLock makes one attempt to take every key. It never queues, and in
// queued mode it does not overtake waiters.
func (c *Core) TryLock(ctx context.Context, kind string, keys ...string) (mutex.Lease, error) {
	rkeys, err := c.checkKeys(keys, true)
	if err != nil {
		return nil, err
	}
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	token, err := c.newToken(kind)
	if err != nil {
		return nil, err
	}
	l, blocked, err := c.join(ctx, keys, rkeys, token, true)
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

// Lock waits until every key is taken by one new lease, or ctx ends.
func (c *Core) Lock(ctx context.Context, kind string, keys ...string) (mutex.Lease, error) {
	rkeys, err := c.checkKeys(keys, true)
	if err != nil {
		return nil, err
	}
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &mutex.NotObtainedError{Cause: err}
	}
	if c.queued {
		return c.lockQueued(ctx, kind, keys, rkeys)
	}
	return c.lockPlain(ctx, kind, keys, rkeys)
}

// Check counts the keys on which a request of kind would not be granted
// now.
func (c *Core) Check(ctx context.Context, kind string, keys ...string) (mutex.Status, error) {
	rkeys, err := c.checkKeys(keys, false)
	if err != nil {
		return mutex.Available, err
	}
	// One script per hash slot (one in all, off a Cluster).
	groups := map[int][]string{}
	if _, ok := c.client.(*redis.ClusterClient); ok {
		for i, k := range keys {
			slot := Slot(Escape(k))
			groups[slot] = append(groups[slot], rkeys[i])
		}
	} else {
		groups[0] = rkeys
	}
	n := 0
	for _, g := range groups {
		busy, err := checkScript.Run(ctx, c.client, resourceKeys(g), c.mode, kind).Int()
		if err != nil {
			return mutex.Available, fmt.Errorf("check: %w", err)
		}
		n += busy
	}
	switch {
	case n == 0:
		return mutex.Available, nil
	case n == len(rkeys):
		return mutex.Locked, nil
	}
	return mutex.PartiallyLocked, nil
}

// Close stops the Core: waiting Lock calls return mutex.ErrClosed, the
// pub/sub connection is closed, and Close waits for background work to
// end. Leases already granted stay valid and can still be extended and
// unlocked.
func (c *Core) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.stop)
	c.mu.Unlock()
	c.bgCancel()
	err := c.ps.Close()
	c.bg.Wait()
	return err
}

// outcome is the decoded reply of join or claim.
type outcome struct {
	granted bool
	fence   string
	free    []int64 // permits left per key after a grant
	index   int     // 1-based index of the key in the way
	retry   time.Duration
	lost    bool // claim: the token is no longer queued
	revoked bool // join: the token was revoked
}

func decode(res []any, n int) (outcome, error) {
	var o outcome
	if len(res) == 0 {
		return o, fmt.Errorf("unexpected reply %v", res)
	}
	code, _ := res[0].(int64)
	switch code {
	case 1:
		if len(res) < 2+n {
			return o, fmt.Errorf("unexpected reply %v", res)
		}
		o.granted = true
		switch f := res[1].(type) {
		case string:
			o.fence = f
		case int64:
			o.fence = strconv.FormatInt(f, 10)
		}
		for _, x := range res[2 : 2+n] {
			v, _ := x.(int64)
			o.free = append(o.free, v)
		}
	case 0:
		if len(res) < 3 {
			return o, fmt.Errorf("unexpected reply %v", res)
		}
		idx, _ := res[1].(int64)
		o.index = int(idx)
		if ms, _ := res[2].(int64); ms > 0 {
			o.retry = time.Duration(ms) * time.Millisecond
		}
	case -1:
		o.lost = true
		if len(res) > 1 {
			idx, _ := res[1].(int64)
			o.index = int(idx)
		}
	case -3:
		o.revoked = true
	default:
		return o, fmt.Errorf("unexpected reply %v", res)
	}
	if o.index < 0 || o.index > n {
		return o, fmt.Errorf("unexpected reply %v", res)
	}
	return o, nil
}

// blockedBy returns the *mutex.NotObtainedError of an outcome that was not
// a grant.
func blockedBy(keys []string, o outcome) *mutex.NotObtainedError {
	e := &mutex.NotObtainedError{RetryAfter: o.retry}
	if o.index >= 1 {
		e.Key = keys[o.index-1]
	}
	return e
}

// join runs the join script once under token: it takes the keys, or with
// try unset, queues token for them. It returns a lease when granted, or a
// *mutex.NotObtainedError naming the key in the way, or an error; or
// nothing at all when the grant's reply came too late to use it (the
// grant is being released). If the outcome is unknown, token leaves in
// the background.
func (c *Core) join(ctx context.Context, keys, rkeys []string, token string, try bool) (*lease, *mutex.NotObtainedError, error) {
	l, o, err := c.joinOutcome(ctx, keys, rkeys, token, try)
	if err != nil || l != nil || o.granted {
		return l, nil, err
	}
	return nil, blockedBy(keys, o), nil
}

func (c *Core) joinOutcome(ctx context.Context, keys, rkeys []string, token string, try bool) (*lease, outcome, error) {
	onlyTry := "0"
	if try {
		onlyTry = "1"
	}
	rk := append(resourceKeys(rkeys), markerKey(rkeys[0], token))
	start := time.Now()
	cmd, sends := run(ctx, c.client, joinScript, rk, token, c.mode, c.ttlMS, livenessMS, onlyTry)
	res, err := cmd.Slice()
	if err != nil {
		if unknownOutcome(sends, err) {
			c.leaveInBackground(rkeys, token)
		}
		return nil, outcome{}, err
	}
	o, err := decode(res, len(rkeys))
	if err != nil {
		return nil, o, err
	}
	if o.revoked {
		return nil, o, fmt.Errorf("token revoked")
	}
	if !o.granted {
		return nil, o, nil
	}
	l, err := c.newLease(keys, rkeys, token, o.fence, start)
	return l, o, err
}

// closedAttemptTimeout bounds the clean-up of a Lock that ends after Close.
const closedAttemptTimeout = bgretry.ClosedAttemptTimeout

var livenessMS = strconv.FormatInt(Liveness.Milliseconds(), 10)

// revokeMS is how long a revocation marker outlives the give-up of a
// request with an unknown outcome.
func (c *Core) revokeMS() string {
	return strconv.FormatInt(max(2*c.ttl, 10*time.Second).Milliseconds(), 10)
}

// leaveInBackground gives up a request of token whose outcome is unknown:
// until it succeeds, it removes token from the queues and the holders of
// rkeys, and marks it revoked so that a request of it that reaches Redis
// later takes nothing.
func (c *Core) leaveInBackground(rkeys []string, token string) {
	keys := append(resourceKeys(rkeys), markerKey(rkeys[0], token))
	c.untilDone(func(ctx context.Context) error {
		cmd, _ := run(ctx, c.client, leaveScript, keys, token, c.mode, c.wakeBase, c.revokeMS(), c.plainFlag())
		return cmd.Err()
	})
}

// plainFlag tells the scripts how to announce a release: "1" on the
// channel named like the holders key, "0" to the queue's waiters.
func (c *Core) plainFlag() string {
	if c.queued {
		return "0"
	}
	return "1"
}

// untilDone runs req in the background until it succeeds (see
// bgretry.Until). Close stops the retries, but lets the first attempt
// finish for up to a second; after Close, req makes one attempt at once,
// of at most a second.
func (c *Core) untilDone(req func(ctx context.Context) error) {
	c.mu.Lock()
	started := c.goLocked(func(ctx context.Context) { bgretry.Until(ctx, req) })
	c.mu.Unlock()
	if !started {
		bgretry.Once(req)
	}
}

// goLocked runs f in a goroutine that Close waits for, with a context that
// Close cancels. After Close it does nothing and reports false. c.mu must
// be held.
func (c *Core) goLocked(f func(ctx context.Context)) bool {
	if c.closed {
		return false
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		f(c.bgCtx)
	}()
	return true
}

// ended turns an error of a request made for a Lock into the error to
// return: a *mutex.NotObtainedError if ctx ended meanwhile.
func ended(ctx context.Context, last *mutex.NotObtainedError, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return notObtained(last, cerr)
	}
	return fmt.Errorf("acquire: %w", err)
}

func notObtained(last *mutex.NotObtainedError, cause error) error {
	e := &mutex.NotObtainedError{Cause: cause}
	if last != nil {
		e.Key, e.RetryAfter = last.Key, last.RetryAfter
	}
	return e
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}
