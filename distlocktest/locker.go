package distlocktest

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/distlock/distlock/mutex"
)

// Options configures a Locker. The zero value is ready to use.
type Options struct {
	// Clock is the clock the leases' TTLs run on. Nil means a new Clock
	// at the Unix epoch (UTC), which Locker.Clock returns.
	Clock *Clock
	// TTL is how long a lease holds its keys without an Extend, on Clock.
	// Zero means mutex.DefaultTTL; otherwise it must be at least
	// mutex.MinTTL. It is rounded down to whole milliseconds.
	TTL time.Duration
	// FIFO grants each key in the order the Lock calls arrived.
	FIFO bool
}

// Locker is an in-memory mutex.Locker with the semantics of a
// *mutex.Mutex, for the unit tests of code that takes locks. Its leases
// expire on a Clock that the test advances. It is safe for concurrent use;
// its zero value is not usable: create it with NewLocker.
type Locker struct {
	clock *Clock
	ttl   time.Duration
	fifo  bool
	id    string

	mu      sync.Mutex
	closed  bool
	held    map[string]*lease // the lease holding each held key
	waiters []*waiter         // waiting Lock calls, in arrival order
	fence   int64             // the last fence granted
}

// waiter is a Lock call waiting for its keys.
type waiter struct {
	keys  []string
	ready chan struct{} // closed once lease or err is set
	lease *lease
	err   error
}

var _ mutex.Locker = (*Locker)(nil)

// NewLocker returns a Locker configured by opts. It fails with an error
// wrapping mutex.ErrInvalid for a bad TTL.
func NewLocker(opts Options) (*Locker, error) {
	ttl := opts.TTL
	switch {
	case ttl == 0:
		ttl = mutex.DefaultTTL
	case ttl < 0:
		return nil, fmt.Errorf("%w: negative TTL %v", mutex.ErrInvalid, ttl)
	case ttl < mutex.MinTTL:
		return nil, fmt.Errorf("%w: TTL %v shorter than %v", mutex.ErrInvalid, ttl, mutex.MinTTL)
	}
	clock := opts.Clock
	if clock == nil {
		clock = NewClock(time.Unix(0, 0).UTC())
	}
	l := &Locker{
		clock: clock,
		ttl:   ttl.Truncate(time.Millisecond),
		fifo:  opts.FIFO,
		id:    rand.Text()[:8],
		held:  map[string]*lease{},
	}
	clock.watch(l.tick)
	return l, nil
}

// Clock returns the clock the leases' TTLs run on.
func (l *Locker) Clock() *Clock { return l.clock }

// TTL returns the lease time-to-live in use.
func (l *Locker) TTL() time.Duration { return l.ttl }

// FIFO reports whether the Locker grants keys in request order.
func (l *Locker) FIFO() bool { return l.fifo }

// Waiting returns the number of Lock calls waiting for their keys. A test
// can wait for it to reach a number before it releases a key or advances
// the clock, to know who waits.
func (l *Locker) Waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waiters)
}

// TryLock makes one attempt to hold every key. It returns a
// *mutex.NotObtainedError (wrapping mutex.ErrNotObtained) if a key is held
// (in FIFO mode, also if Lock calls wait for it), with the key and its
// remaining TTL on the Clock; an error wrapping mutex.ErrInvalid for bad
// keys; one wrapping mutex.ErrReentrant for a key that ctx holds through
// a lease of this Locker (see mutex.ContextWithLease); mutex.ErrClosed
// after Close; and one wrapping ctx.Err() if ctx has ended.
func (l *Locker) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	if err := l.start(ctx, keys); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("acquire: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, mutex.ErrClosed
	}
	l.sweepLocked()
	if key, retry, busy := l.blockerLocked(keys); busy {
		return nil, &mutex.NotObtainedError{Key: key, RetryAfter: retry}
	}
	return l.grantLocked(keys), nil
}

// Lock waits until every key is held by one new lease, or ctx ends. It is
// granted the keys as soon as they are free: at the Unlock or the expiry
// (by Clock.Advance) that frees the last of them. Without FIFO, waiters
// whose keys are all free are granted in arrival order, and a waiter that
// one busy key blocks does not hold up the waiters behind it on its other
// keys. In FIFO mode, each key goes to its waiters in arrival order, and
// a waiter is granted only when it heads the queue of each of its keys
// and they are all free.
//
// A wait that ends with ctx returns a *mutex.NotObtainedError for which
// both errors.Is(err, mutex.ErrNotObtained) and errors.Is(err, ctx.Err())
// hold. Bad keys give an error wrapping mutex.ErrInvalid, a key that ctx
// holds one wrapping mutex.ErrReentrant, and a closed Locker
// mutex.ErrClosed.
func (l *Locker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	if err := l.start(ctx, keys); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &mutex.NotObtainedError{Cause: err}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, mutex.ErrClosed
	}
	l.sweepLocked()
	w := &waiter{keys: slices.Clone(keys), ready: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.grantWaitersLocked()
	l.mu.Unlock()

	select {
	case <-w.ready:
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		select {
		case <-w.ready:
			// Granted or closed while ctx ended: that outcome stands.
		default:
			l.waiters = slices.DeleteFunc(l.waiters, func(x *waiter) bool { return x == w })
			// In FIFO mode, the waiters behind w may be free to go now.
			l.grantWaitersLocked()
			key, retry, _ := l.blockerLocked(keys)
			return nil, &mutex.NotObtainedError{Key: key, RetryAfter: retry, Cause: ctx.Err()}
		}
	}
	if w.err != nil {
		return nil, w.err
	}
	return w.lease, nil
}

// Check reports whether the keys are held: mutex.Available if none is,
// mutex.Locked if all are, mutex.PartiallyLocked otherwise. In FIFO mode a
// key that Lock calls wait for counts as held. It works after Close too.
func (l *Locker) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	if err := checkKeys(keys); err != nil {
		return mutex.Available, err
	}
	if err := ctx.Err(); err != nil {
		return mutex.Available, fmt.Errorf("check: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked()
	n := 0
	for _, k := range keys {
		if l.held[k] != nil || (l.fifo && l.queuedLocked(k)) {
			n++
		}
	}
	switch n {
	case 0:
		return mutex.Available, nil
	case len(keys):
		return mutex.Locked, nil
	}
	return mutex.PartiallyLocked, nil
}

// Close makes waiting Lock calls return mutex.ErrClosed, and later Lock and
// TryLock calls too. Leases already granted stay valid: they can still be
// extended and unlocked, and they expire on the Clock. Close always
// returns nil.
func (l *Locker) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	for _, w := range l.waiters {
		w.err = mutex.ErrClosed
		close(w.ready)
	}
	l.waiters = nil
	return nil
}

// start checks the arguments of Lock and TryLock.
func (l *Locker) start(ctx context.Context, keys []string) error {
	if err := checkKeys(keys); err != nil {
		return err
	}
	return l.checkReentrant(ctx, keys)
}

// checkKeys validates the keys of one call as a *mutex.Mutex does.
func checkKeys(keys []string) error {
	if len(keys) == 0 {
		return fmt.Errorf("%w: no keys", mutex.ErrInvalid)
	}
	if len(keys) > mutex.MaxKeys {
		return fmt.Errorf("%w: %d keys, more than %d", mutex.ErrInvalid, len(keys), mutex.MaxKeys)
	}
	for i, k := range keys {
		if k == "" {
			return fmt.Errorf("%w: empty key", mutex.ErrInvalid)
		}
		if len(k) > mutex.MaxKeyLen {
			return fmt.Errorf("%w: key of %d bytes, longer than %d", mutex.ErrInvalid, len(k), mutex.MaxKeyLen)
		}
		if slices.Contains(keys[:i], k) {
			return fmt.Errorf("%w: key %q given twice", mutex.ErrInvalid, k)
		}
	}
	return nil
}

// checkReentrant fails with an error wrapping mutex.ErrReentrant if ctx
// records a live lease of l on one of keys: one recorded with l itself
// (by mutex.ContextWithLease, as mutex.WithLock does), or the innermost
// lease of ctx if it is l's behind its decorators.
func (l *Locker) checkReentrant(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if _, ok := mutex.HeldLease(ctx, l, k); ok {
			return fmt.Errorf("%w: %q", mutex.ErrReentrant, k)
		}
	}
	own := l.own(mutex.LeaseFromContext(ctx))
	if own == nil || own.Err() != nil {
		return nil
	}
	for _, k := range keys {
		if slices.Contains(own.keys, k) {
			return fmt.Errorf("%w: %q", mutex.ErrReentrant, k)
		}
	}
	return nil
}

// own returns the lease of l behind x's decorators, or nil.
func (l *Locker) own(x mutex.Lease) *lease {
	for x != nil {
		if ls, ok := x.(*lease); ok {
			if ls.l == l {
				return ls
			}
			return nil
		}
		u, ok := x.(mutex.Unwrapper)
		if !ok {
			return nil
		}
		x = u.Unwrap()
	}
	return nil
}

// tick ends the leases that the clock's advance expired.
func (l *Locker) tick() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked()
}

// sweepLocked ends the leases whose deadline the clock has reached, frees
// their keys and grants them to the waiters. l.mu must be held.
func (l *Locker) sweepLocked() {
	now := l.clock.Now()
	freed := false
	for k, ls := range l.held {
		if now.Before(ls.deadline) {
			continue
		}
		delete(l.held, k)
		ls.endLocked(fmt.Errorf("%w: validity of the lease on %q ran out", mutex.ErrNotHeld, ls.keys))
		freed = true
	}
	if freed {
		l.grantWaitersLocked()
	}
}

// blockerLocked returns the first of keys that is held (in FIFO mode, or
// that Lock calls wait for), with the holder's remaining TTL, and whether
// there is one. l.mu must be held.
func (l *Locker) blockerLocked(keys []string) (key string, retryAfter time.Duration, busy bool) {
	for _, k := range keys {
		if ls := l.held[k]; ls != nil {
			return k, ls.deadline.Sub(l.clock.Now()), true
		}
		if l.fifo && l.queuedLocked(k) {
			return k, 0, true
		}
	}
	return "", 0, false
}

// queuedLocked reports whether a Lock call waits for key. l.mu must be
// held.
func (l *Locker) queuedLocked(key string) bool {
	for _, w := range l.waiters {
		if slices.Contains(w.keys, key) {
			return true
		}
	}
	return false
}

// grantWaitersLocked grants their keys to the waiters that may have them
// now, in arrival order. In FIFO mode, a waiter that is not granted keeps
// each of its keys from the waiters behind it. l.mu must be held.
func (l *Locker) grantWaitersLocked() {
	reserved := map[string]bool{}
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		free := true
		for _, k := range w.keys {
			if l.held[k] != nil || reserved[k] {
				free = false
				break
			}
		}
		if free {
			w.lease = l.grantLocked(w.keys)
			close(w.ready)
			continue
		}
		if l.fifo {
			for _, k := range w.keys {
				reserved[k] = true
			}
		}
		kept = append(kept, w)
	}
	clear(l.waiters[len(kept):])
	l.waiters = kept
}

// grantLocked returns a new lease on keys, which must be free. l.mu must
// be held.
func (l *Locker) grantLocked(keys []string) *lease {
	l.fence++
	ls := &lease{
		l:        l,
		keys:     slices.Clone(keys),
		token:    l.id + "." + rand.Text(),
		fence:    l.fence,
		done:     make(chan struct{}),
		deadline: l.clock.Now().Add(l.ttl),
	}
	for _, k := range keys {
		l.held[k] = ls
	}
	return ls
}

// releaseLocked frees the keys that ls holds and grants them to the
// waiters. l.mu must be held.
func (l *Locker) releaseLocked(ls *lease) {
	for _, k := range ls.keys {
		if l.held[k] == ls {
			delete(l.held, k)
		}
	}
	l.grantWaitersLocked()
}

// lease is the mutex.Lease of a Locker. Its validity ends at its deadline
// on the Locker's Clock, when its keys expire too.
type lease struct {
	l     *Locker
	keys  []string
	token string
	fence int64
	done  chan struct{}

	// Guarded by l.mu.
	deadline time.Time
	err      error // why the lease ended; nil while held
	unlocked bool  // Unlock was called and did not fail
}

var _ mutex.Lease = (*lease)(nil)

func (ls *lease) Keys() []string { return slices.Clone(ls.keys) }
func (ls *lease) Token() string  { return ls.token }
func (ls *lease) Fence() int64   { return ls.fence }

// FenceOf returns the fence of the lease if it holds key, 0 otherwise.
func (ls *lease) FenceOf(key string) int64 {
	if slices.Contains(ls.keys, key) {
		return ls.fence
	}
	return 0
}

func (ls *lease) Done() <-chan struct{} { return ls.done }

// Err is nil while the lease is held, mutex.ErrReleased after Unlock, and
// an error wrapping mutex.ErrNotHeld once the Clock reached its deadline.
func (ls *lease) Err() error {
	ls.l.mu.Lock()
	defer ls.l.mu.Unlock()
	ls.l.sweepLocked()
	return ls.err
}

// Extend moves the lease's deadline to the Clock's time plus the TTL. It
// returns an error wrapping mutex.ErrNotHeld once the lease has expired,
// mutex.ErrReleased after Unlock, and one wrapping ctx.Err(), leaving the
// lease as it was, if ctx has ended.
func (ls *lease) Extend(ctx context.Context) error {
	l := ls.l
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked()
	if ls.err != nil {
		return fmt.Errorf("extend: %w", ls.err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("extend: %w", err)
	}
	ls.deadline = l.clock.Now().Add(l.ttl)
	return nil
}

// Unlock releases the keys. It returns nil when the lease held them,
// mutex.ErrReleased after an earlier Unlock, an error wrapping
// mutex.ErrNotHeld when the lease had expired, and one wrapping ctx.Err(),
// leaving the lease as it was, if ctx has ended; after that one, Unlock may
// be called again.
func (ls *lease) Unlock(ctx context.Context) error {
	l := ls.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if ls.unlocked {
		return fmt.Errorf("unlock: %w", mutex.ErrReleased)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	l.sweepLocked()
	ls.unlocked = true
	if ls.err != nil {
		return fmt.Errorf("unlock: %w", ls.err)
	}
	ls.endLocked(mutex.ErrReleased)
	l.releaseLocked(ls)
	return nil
}

// endLocked ends the lease with err. l.mu must be held.
func (ls *lease) endLocked(err error) {
	if ls.err != nil {
		return
	}
	ls.err = err
	close(ls.done)
}
