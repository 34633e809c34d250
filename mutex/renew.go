package mutex

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jpillora/backoff"
)

// Defaults of RenewerConfig.
const (
	// DefaultRenewerWorkers is kept with RenewerConfig.Workers, which has
	// no effect.
	DefaultRenewerWorkers   = 4
	DefaultRenewerBatchSize = 512
	DefaultRenewerWindow    = 5 * time.Millisecond
)

// minRetryDelay is the first pause after a failed extension.
const minRetryDelay = 10 * time.Millisecond

// AutoExtender is implemented by leases that are extended in the background,
// such as those of middleware.AutoExtend. RunLocked does not extend them
// again; it only watches them. IsAutoExtended finds it behind decorators.
type AutoExtender interface {
	// AutoExtended reports whether the lease is extended in the background.
	AutoExtended() bool
}

// Deadliner is implemented by leases that know the end of their validity,
// such as the leases of a Mutex. Deadline finds it behind decorators.
type Deadliner interface {
	// Deadline returns the moment until which the lease surely holds its
	// keys unless it is extended.
	Deadline() time.Time
}

// Deadline returns the end of the validity of lease, or of the first lease
// behind its decorators (see Unwrapper) that is a Deadliner: the moment
// until which it surely holds its keys unless extended. The leases of a
// Mutex know it; ok is false if no lease in the chain does.
func Deadline(lease Lease) (deadline time.Time, ok bool) {
	if d := findDeadliner(lease); d != nil {
		return d.Deadline(), true
	}
	return time.Time{}, false
}

// IsAutoExtended reports whether lease, or a lease behind its decorators
// (see Unwrapper), is an AutoExtender whose AutoExtended reports true.
func IsAutoExtended(lease Lease) bool {
	for lease != nil {
		if a, ok := lease.(AutoExtender); ok && a.AutoExtended() {
			return true
		}
		u, ok := lease.(Unwrapper)
		if !ok {
			return false
		}
		lease = u.Unwrap()
	}
	return false
}

// findDeadliner returns lease, or the first lease behind its decorators,
// that reports its validity deadline, or nil.
func findDeadliner(lease Lease) Deadliner {
	for lease != nil {
		if d, ok := lease.(Deadliner); ok {
			return d
		}
		u, ok := lease.(Unwrapper)
		if !ok {
			return nil
		}
		lease = u.Unwrap()
	}
	return nil
}

// RenewerConfig configures a Renewer. The zero value means the defaults.
type RenewerConfig struct {
	// Workers has no effect; it is kept so that configurations that set
	// it still compile. Extensions run in one goroutine per Redis client
	// with extensions due, so that a Redis that does not answer holds up no
	// lease of another. Negative values are still refused.
	Workers int
	// BatchSize is the largest number of leases extended in one batch
	// (DefaultRenewerBatchSize if zero).
	BatchSize int
	// Window is how far apart renewals may fall due and still be made
	// together, the later ones early (DefaultRenewerWindow if zero).
	Window time.Duration
}

// RenewerStats counts what a Renewer did.
type RenewerStats struct {
	// Leases is the number of leases being renewed now.
	Leases int
	// Renewals is the number of lease extensions attempted.
	Renewals uint64
	// Batches is the number of batches sent. The leases of Mutexes in a
	// batch cost one Redis round trip per client, any other lease one call
	// of its Extend.
	Batches uint64
	// Failures is the number of extensions that failed with an error other
	// than the end of the lease, and were retried.
	Failures uint64
}

// RenewPolicy says when a Renewer extends a lease. The zero value extends
// it each time a third of its remaining validity has passed.
//
// Validity comes from the lease's Deadline, or that of a lease behind its
// decorators (see Deadliner). Whatever the policy, a renewal never comes
// sooner than a tenth of the validity after the last one, nor later than a
// tenth of it before the deadline, so that a bad setting neither floods
// Redis nor lets a lease lapse. A lease without a deadline is extended every
// Interval, or every FallbackExtendInterval.
type RenewPolicy struct {
	// Interval, if positive, extends the lease every Interval instead of each
	// time a third of its validity has passed.
	Interval time.Duration
	// Threshold, if positive, extends the lease when its remaining validity
	// drops below Threshold. With Interval as well, whichever comes first
	// applies.
	Threshold time.Duration
}

// Renewer extends leases in the background: it is the one renewal engine
// of distlock, used by RunLocked and WithLock (through the process-wide
// Renewer, see DefaultRenewer) and by middleware.AutoExtend, whose
// Scheduler is a Renewer.
//
// One Renewer serves any number of leases with one goroutine that keeps
// them in a heap ordered by due time: renewals due within Window of each
// other go together, in batches of up to BatchSize. Each lease is extended with its
// own Extend method, except that the leases of Mutexes that share a Redis
// client are extended in one pipeline, as by ExtendMany. The extensions of
// a batch run concurrently, one goroutine per client (and per other
// lease), so a Redis that does not answer holds up its own leases only;
// each client has one extension in flight at most, and leases that fall
// due meanwhile go with its next one.
//
// A renewal that fails with a Redis error is retried with backoff and
// jitter until it succeeds or the lease's validity runs out. One that finds
// the keys held by another owner ends the lease at once; the Renewer then
// drops it. Either way the lease reports its end through Done and Err, no
// later than its validity deadline.
//
// The goroutines run only while the Renewer has leases to renew: they start
// with the first lease and exit once the last one is stopped or has ended.
// So a Renewer needs no Close, and the process-wide one is never closed.
// Close is for a Renewer that its owner wants to stop at a given moment.
//
// A renewal in flight ends at the latest validity deadline of its batch,
// provided the client honours context deadlines (go-redis does with
// redis.Options.ContextTimeoutEnabled); otherwise, when Redis does not
// answer, it ends with the client's read timeout. Either way each lease
// still ends at its own deadline, and Renewal.Stop does not wait for it.
type Renewer struct {
	batch  int
	window time.Duration
	shared bool            // the process-wide Renewer, which is never closed
	ctx    context.Context // cancelled by Close, ends renewals in flight
	cancel context.CancelFunc

	mu      sync.Mutex
	heap    renewalHeap
	running bool // the timer goroutine is running
	leases  int  // renewals started and not yet dropped
	closed  bool
	wake    chan struct{} // tells the timer goroutine of an earlier due time
	wg      sync.WaitGroup
	// sending holds, by unit (a Redis client, or a lease of another
	// kind), the leases that wait for the unit's extension in flight to
	// end: each unit has at most one in flight.
	sending map[any][]*Renewal

	renewals, batches, failures atomic.Uint64
}

// defaultRenewer is the process-wide Renewer.
var defaultRenewer = func() *Renewer {
	r := newRenewer(DefaultRenewerBatchSize, DefaultRenewerWindow)
	r.shared = true
	return r
}()

// DefaultRenewer returns the process-wide Renewer, with the default
// configuration. RunLocked and WithLock extend leases with it, and so does
// middleware.AutoExtend unless given another. It is never closed: its Close
// returns an error wrapping ErrInvalid and changes nothing.
func DefaultRenewer() *Renewer { return defaultRenewer }

// NewRenewer returns a Renewer of its own. Negative values in cfg give an
// error wrapping ErrInvalid.
func NewRenewer(cfg RenewerConfig) (*Renewer, error) {
	if cfg.Workers < 0 || cfg.BatchSize < 0 || cfg.Window < 0 {
		return nil, fmt.Errorf("%w: negative value in renewer config %+v", ErrInvalid, cfg)
	}
	batch, window := cfg.BatchSize, cfg.Window
	if batch == 0 {
		batch = DefaultRenewerBatchSize
	}
	if window == 0 {
		window = DefaultRenewerWindow
	}
	return newRenewer(batch, window), nil
}

func newRenewer(batch int, window time.Duration) *Renewer {
	ctx, cancel := context.WithCancel(context.Background())
	return &Renewer{
		batch:  batch,
		window: window,
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
	}
}

// Stats returns what the Renewer did so far.
func (r *Renewer) Stats() RenewerStats {
	r.mu.Lock()
	n := r.leases
	r.mu.Unlock()
	return RenewerStats{
		Leases:   n,
		Renewals: r.renewals.Load(),
		Batches:  r.batches.Load(),
		Failures: r.failures.Load(),
	}
}

// Err returns an error wrapping ErrClosed once the Renewer is closed, and
// nil before.
func (r *Renewer) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errRenewerClosed
	}
	return nil
}

var errRenewerClosed = fmt.Errorf("renew: %w", ErrClosed)

// Close stops every renewal and waits for the Renewer's goroutines to exit.
// Leases it served are no longer extended: they end at their validity
// deadline unless extended or unlocked by hand. Renew on a closed Renewer
// fails with an error wrapping ErrClosed. Close may be called more than
// once. The process-wide Renewer (see DefaultRenewer) is never closed.
func (r *Renewer) Close() error {
	if r.shared {
		return fmt.Errorf("%w: the process-wide Renewer cannot be closed", ErrInvalid)
	}
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		for _, x := range r.heap {
			x.index = -1
			r.dropLocked(x)
		}
		r.heap = nil
		r.cancel()
		r.signal()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// Renewal is a lease being extended by a Renewer, from Renew until Stop or
// the end of the lease.
type Renewal struct {
	r      *Renewer
	lease  Lease
	policy RenewPolicy

	// Guarded by r.mu.
	due      time.Time
	index    int32 // in r.heap, or -1
	failures int32 // failed renewals in a row
	stopped  bool
	active   bool // counted in r.leases
}

// Renew starts extending lease in the background, as p says, until Stop is
// called or the lease ends. It fails with an error wrapping ErrClosed if the
// Renewer is closed, and with one wrapping ErrInvalid for a nil lease or a
// negative duration in p.
func (r *Renewer) Renew(lease Lease, p RenewPolicy) (*Renewal, error) {
	switch {
	case lease == nil:
		return nil, fmt.Errorf("%w: nil Lease to renew", ErrInvalid)
	case p.Interval < 0:
		return nil, fmt.Errorf("%w: renew interval %v, want >= 0", ErrInvalid, p.Interval)
	case p.Threshold < 0:
		return nil, fmt.Errorf("%w: renew threshold %v, want >= 0", ErrInvalid, p.Threshold)
	}
	x := &Renewal{r: r, lease: lease, policy: p, index: -1}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errRenewerClosed
	}
	x.due = x.nextDue(time.Now())
	x.active = true
	r.leases++
	r.pushLocked(x)
	return x, nil
}

// Lease returns the lease being renewed.
func (x *Renewal) Lease() Lease { return x.lease }

// Stop ends the renewal. It does not wait for an extension in flight: one
// that reaches Redis after the lease was unlocked finds the keys released
// and changes nothing. Stop may be called more than once.
func (x *Renewal) Stop() {
	r := x.r
	r.mu.Lock()
	defer r.mu.Unlock()
	x.stopped = true
	if x.index >= 0 {
		heap.Remove(&r.heap, int(x.index))
		if len(r.heap) == 0 {
			r.signal() // so that the timer goroutine exits now
		}
	}
	r.dropLocked(x)
}

// dropLocked forgets a lease that is no longer renewed.
func (r *Renewer) dropLocked(x *Renewal) {
	if x.active {
		x.active = false
		r.leases--
	}
}

// pushLocked puts x in the heap and makes sure the timer goroutine sees it.
func (r *Renewer) pushLocked(x *Renewal) {
	heap.Push(&r.heap, x)
	if !r.running {
		r.running = true
		r.wg.Add(1)
		go r.loop()
	} else if x.index == 0 {
		r.signal()
	}
}

func (r *Renewer) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// loop starts the due renewals, sleeping until the next one falls due. It
// exits when no lease is left.
func (r *Renewer) loop() {
	defer r.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		if len(r.heap) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		now := time.Now()
		if wait := r.heap[0].due.Sub(now); wait > 0 {
			r.mu.Unlock()
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-r.wake:
			}
			continue
		}
		limit := now.Add(r.window)
		var batch []*Renewal
		for len(r.heap) > 0 && !r.heap[0].due.After(limit) {
			x := heap.Pop(&r.heap).(*Renewal)
			if x.lease.Err() != nil {
				r.dropLocked(x) // ended by itself: nothing to renew
				continue
			}
			batch = append(batch, x)
			if len(batch) == r.batch {
				r.renewLocked(batch)
				batch = nil
			}
		}
		if len(batch) > 0 {
			r.renewLocked(batch)
		}
		r.mu.Unlock()
	}
}

// renewLocked starts the extensions of a batch of leases: one goroutine
// per Redis client among the leases of Mutexes, whose extensions go in one
// pipeline, and one per other lease, so that a Redis that does not answer
// holds up its own leases only. It does not wait for them. r.mu must be
// held.
func (r *Renewer) renewLocked(batch []*Renewal) {
	units := make(map[any][]*Renewal)
	for _, x := range batch {
		if r.closed {
			r.dropLocked(x)
			continue
		}
		u := unitOf(x)
		units[u] = append(units[u], x)
	}
	if len(units) == 0 {
		return
	}
	r.batches.Add(1)
	for u, leases := range units {
		if waiting, busy := r.sending[u]; busy {
			// Joins the next extension of the unit.
			r.sending[u] = append(waiting, leases...)
			continue
		}
		r.startLocked(u, leases)
	}
}

// unitOf returns what the extension of x goes with: the Redis client of a
// Mutex lease, whose leases go in one pipeline, or x itself.
func unitOf(x *Renewal) any {
	if l, ok := x.lease.(*lease); ok && isComparable(l.m.client) {
		return l.m.client
	}
	return x
}

// startLocked starts the extension of the leases of unit u, and the next
// ones of u as long as leases wait for it. r.mu must be held.
func (r *Renewer) startLocked(u any, leases []*Renewal) {
	if r.sending == nil {
		r.sending = make(map[any][]*Renewal)
	}
	r.sending[u] = nil
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for len(leases) > 0 {
			r.extend(leases)
			r.mu.Lock()
			waiting := r.sending[u]
			leases = nil
			for _, x := range waiting {
				if x.stopped || r.closed {
					r.dropLocked(x)
				} else {
					leases = append(leases, x)
				}
			}
			if len(leases) == 0 {
				delete(r.sending, u)
			} else {
				r.sending[u] = nil
			}
			r.mu.Unlock()
		}
	}()
}

// extend extends leases, all of Mutexes on one client or one other lease,
// and schedules what follows for each: the next renewal, a retry, or
// nothing once a lease has ended.
func (r *Renewer) extend(batch []*Renewal) {
	var until time.Time
	for _, x := range batch {
		end, ok := Deadline(x.lease)
		if !ok {
			end = time.Now().Add(x.fallbackInterval())
		}
		if end.After(until) {
			until = end
		}
	}
	// An extension that has not succeeded by the validity deadline cannot
	// save its lease any more.
	ctx, cancel := context.WithDeadline(r.ctx, until)
	errs := extendUnit(ctx, batch)
	cancel()
	r.renewals.Add(uint64(len(batch)))

	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range batch {
		err := errs[i]
		switch {
		case x.stopped || r.closed:
			r.dropLocked(x)
		case err == nil:
			x.failures = 0
			x.due = x.nextDue(now)
			r.pushLocked(x)
		case errors.Is(err, ErrNotHeld) || errors.Is(err, ErrReleased) || x.lease.Err() != nil:
			// The lease has ended and says so through Done and Err.
			r.dropLocked(x)
		default:
			// Redis failed: the keys may still be held. Retry until the
			// lease's validity runs out.
			r.failures.Add(1)
			x.failures++
			x.due = x.retryDue(now)
			r.pushLocked(x)
		}
	}
}

// extendUnit extends the leases of one unit (see unitOf): the leases of
// Mutexes on one client in one pipeline (ExtendMany), or one other lease
// with its own Extend, so that its decorators see the extension.
func extendUnit(ctx context.Context, unit []*Renewal) []error {
	if _, ok := unit[0].lease.(*lease); !ok {
		return []error{unit[0].lease.Extend(ctx)}
	}
	leases := make([]Lease, len(unit))
	for i, x := range unit {
		leases[i] = x.lease
	}
	return ExtendMany(ctx, leases...)
}

// fallbackInterval is the renewal interval of a lease whose validity
// deadline is unknown.
func (x *Renewal) fallbackInterval() time.Duration {
	if x.policy.Interval > 0 {
		return x.policy.Interval
	}
	return FallbackExtendInterval
}

// nextDue returns when to renew after a renewal (or the grant) at now.
func (x *Renewal) nextDue(now time.Time) time.Time {
	dl, ok := Deadline(x.lease)
	if !ok {
		return now.Add(x.fallbackInterval())
	}
	v := dl.Sub(now)
	if v <= 0 {
		return now
	}
	p := x.policy
	due := now.Add(v / 3)
	if p.Interval > 0 {
		due = now.Add(p.Interval)
	}
	if p.Threshold > 0 {
		if t := dl.Add(-p.Threshold); p.Interval == 0 || t.Before(due) {
			due = t
		}
	}
	if lo := now.Add(v / 10); due.Before(lo) {
		due = lo
	}
	if hi := dl.Add(-v / 10); due.After(hi) {
		due = hi
	}
	return due
}

// retryDue returns when to retry after a renewal failed at now: backing off
// from minRetryDelay with jitter, never by more than a quarter of the
// remaining validity, and never after the deadline.
func (x *Renewal) retryDue(now time.Time) time.Time {
	b := backoff.Backoff{Min: minRetryDelay, Max: x.fallbackInterval() / 2, Factor: 2, Jitter: true}
	dl, ok := Deadline(x.lease)
	if ok {
		b.Max = dl.Sub(now) / 4
	}
	b.Max = max(b.Max, b.Min)
	due := now.Add(b.ForAttempt(float64(x.failures - 1)))
	if ok && due.After(dl) {
		due = dl
	}
	return due
}

// renewalHeap orders renewals by due time.
type renewalHeap []*Renewal

func (h renewalHeap) Len() int           { return len(h) }
func (h renewalHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h renewalHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = int32(i)
	h[j].index = int32(j)
}

func (h *renewalHeap) Push(v any) {
	x := v.(*Renewal)
	x.index = int32(len(*h))
	*h = append(*h, x)
}

func (h *renewalHeap) Pop() any {
	old := *h
	n := len(old)
	x := old[n-1]
	old[n-1] = nil
	x.index = -1
	*h = old[:n-1]
	return x
}
