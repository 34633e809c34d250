package middleware

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jpillora/backoff"

	"github.com/distlock/distlock/mutex"
)

// Defaults of SchedulerConfig.
const (
	DefaultWorkers   = 4
	DefaultBatchSize = 512
	DefaultWindow    = 5 * time.Millisecond
)

// SchedulerConfig configures a Scheduler. The zero value means the
// defaults.
type SchedulerConfig struct {
	// Workers is how many batches of renewals may be in flight at once
	// (DefaultWorkers if zero).
	Workers int
	// BatchSize is the largest number of leases renewed by one
	// mutex.ExtendMany call (DefaultBatchSize if zero).
	BatchSize int
	// Window is how far apart renewals may fall due and still be made
	// together, the later ones early (DefaultWindow if zero).
	Window time.Duration
}

// SchedulerStats counts what a Scheduler did.
type SchedulerStats struct {
	// Leases is the number of leases being renewed now.
	Leases int
	// Renewals is the number of lease extensions attempted.
	Renewals uint64
	// Batches is the number of mutex.ExtendMany calls, each of which costs
	// one Redis round trip per client among its leases.
	Batches uint64
	// Failures is the number of extensions that failed with an error other
	// than the loss of the lease, and were retried.
	Failures uint64
}

// Scheduler renews the leases of AutoExtend. One Scheduler serves any number
// of leases with one goroutine that keeps them in a heap ordered by due
// time, plus at most Workers goroutines that run the renewals: renewals due
// within Window of each other go together, in batches of up to BatchSize,
// to mutex.ExtendMany, which sends the batch to Redis in one pipeline per
// client.
//
// The goroutines run only while the Scheduler has leases to renew: they
// start with the first lease and exit once the last one is unlocked or has
// ended. So a Scheduler needs no Close, and the process-wide one used by
// default is never closed. Close is for a Scheduler that its owner wants to
// stop at a given moment.
//
// A renewal in flight ends at the latest validity deadline of its batch,
// provided the client honours context deadlines (go-redis does with
// redis.Options.ContextTimeoutEnabled); otherwise, when Redis does not
// answer, it ends with the client's read timeout. Either way each lease
// still ends at its own deadline.
type Scheduler struct {
	workers int
	batch   int
	window  time.Duration
	ctx     context.Context // cancelled by Close, ends renewals in flight
	cancel  context.CancelFunc

	mu      sync.Mutex
	cond    sync.Cond // signalled when a renewal finishes
	heap    leaseHeap
	queue   [][]*autoLease // batches waiting for a worker
	busy    int            // workers running
	running bool           // the timer goroutine is running
	leases  int            // leases added and not yet dropped
	closed  bool
	wake    chan struct{} // tells the timer goroutine of an earlier due time
	wg      sync.WaitGroup

	renewals, batches, failures atomic.Uint64
}

// defaultScheduler serves AutoExtend when no WithScheduler is given.
var defaultScheduler = newScheduler(DefaultWorkers, DefaultBatchSize, DefaultWindow)

// NewScheduler returns a Scheduler. Negative values in cfg give an error
// wrapping mutex.ErrInvalid.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Workers < 0 || cfg.BatchSize < 0 || cfg.Window < 0 {
		return nil, fmt.Errorf("middleware: scheduler: %w: negative value in %+v", mutex.ErrInvalid, cfg)
	}
	workers, batch, window := cfg.Workers, cfg.BatchSize, cfg.Window
	if workers == 0 {
		workers = DefaultWorkers
	}
	if batch == 0 {
		batch = DefaultBatchSize
	}
	if window == 0 {
		window = DefaultWindow
	}
	return newScheduler(workers, batch, window), nil
}

func newScheduler(workers, batch int, window time.Duration) *Scheduler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{
		workers: workers,
		batch:   batch,
		window:  window,
		ctx:     ctx,
		cancel:  cancel,
		wake:    make(chan struct{}, 1),
	}
	s.cond.L = &s.mu
	return s
}

// Stats returns what the Scheduler did so far.
func (s *Scheduler) Stats() SchedulerStats {
	s.mu.Lock()
	n := s.leases
	s.mu.Unlock()
	return SchedulerStats{
		Leases:   n,
		Renewals: s.renewals.Load(),
		Batches:  s.batches.Load(),
		Failures: s.failures.Load(),
	}
}

// Close stops every renewal and waits for the Scheduler's goroutines to
// exit. Leases it served are no longer extended: they end at their validity
// deadline unless extended or unlocked by hand. Locking through an
// AutoExtend that uses a closed Scheduler fails with an error wrapping
// mutex.ErrClosed. Close may be called more than once.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, a := range s.heap {
			a.index = -1
			s.dropLocked(a)
		}
		for _, b := range s.queue {
			for _, a := range b {
				a.inflight = false
				s.dropLocked(a)
			}
		}
		s.heap = nil
		s.queue = nil
		s.cancel()
		s.cond.Broadcast()
		s.signal()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Scheduler) errClosed() error {
	return fmt.Errorf("middleware: auto-extend: scheduler: %w", mutex.ErrClosed)
}

// add starts renewing a. It fails if the Scheduler is closed.
func (s *Scheduler) add(a *autoLease) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.errClosed()
	}
	a.due = a.nextDue(time.Now())
	a.active = true
	s.leases++
	s.pushLocked(a)
	return nil
}

// dropLocked forgets a lease that is no longer renewed.
func (s *Scheduler) dropLocked(a *autoLease) {
	if a.active {
		a.active = false
		s.leases--
	}
}

// pushLocked puts a in the heap and makes sure the timer goroutine sees it.
func (s *Scheduler) pushLocked(a *autoLease) {
	heap.Push(&s.heap, a)
	if !s.running {
		s.running = true
		s.wg.Add(1)
		go s.loop()
	} else if a.index == 0 {
		s.signal()
	}
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// remove stops renewing a and waits for a renewal of a in flight to end.
func (s *Scheduler) remove(a *autoLease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a.stopped = true
	if a.index >= 0 {
		heap.Remove(&s.heap, a.index)
		if len(s.heap) == 0 {
			s.signal() // so that the timer goroutine exits now
		}
	}
	s.dropLocked(a)
	for a.inflight {
		s.cond.Wait()
	}
}

// loop hands due renewals to the workers, sleeping until the next one falls
// due. It exits when no lease is left.
func (s *Scheduler) loop() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if len(s.heap) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		now := time.Now()
		if wait := s.heap[0].due.Sub(now); wait > 0 {
			s.mu.Unlock()
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-s.wake:
			}
			continue
		}
		limit := now.Add(s.window)
		var batch []*autoLease
		for len(s.heap) > 0 && !s.heap[0].due.After(limit) {
			a := heap.Pop(&s.heap).(*autoLease)
			if a.inner.Err() != nil {
				s.dropLocked(a) // ended by itself: nothing to renew
				continue
			}
			a.inflight = true
			batch = append(batch, a)
			if len(batch) == s.batch {
				s.dispatchLocked(batch)
				batch = nil
			}
		}
		if len(batch) > 0 {
			s.dispatchLocked(batch)
		}
		s.mu.Unlock()
	}
}

// dispatchLocked queues a batch and starts a worker for it if one may start.
func (s *Scheduler) dispatchLocked(batch []*autoLease) {
	s.queue = append(s.queue, batch)
	if s.busy < s.workers {
		s.busy++
		s.wg.Add(1)
		go s.work()
	}
}

// work renews queued batches until none is left.
func (s *Scheduler) work() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.busy--
			s.mu.Unlock()
			return
		}
		batch := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()
		s.renew(batch)
	}
}

// renew extends a batch of leases in one call and schedules what follows
// for each: the next renewal, a retry, or nothing once a lease has ended.
func (s *Scheduler) renew(batch []*autoLease) {
	leases := make([]mutex.Lease, len(batch))
	var until time.Time
	for i, a := range batch {
		leases[i] = a.inner
		end := time.Now().Add(a.cfg.fallbackInterval())
		if a.dl != nil {
			end = a.dl.Deadline()
		}
		if end.After(until) {
			until = end
		}
	}
	// An extension that has not succeeded by the validity deadline cannot
	// save its lease any more.
	ctx, cancel := context.WithDeadline(s.ctx, until)
	errs := mutex.ExtendMany(ctx, leases...)
	cancel()
	s.batches.Add(1)
	s.renewals.Add(uint64(len(batch)))

	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, a := range batch {
		a.inflight = false
		err := errs[i]
		switch {
		case a.stopped || s.closed:
			s.dropLocked(a)
		case err == nil:
			a.failures = 0
			a.due = a.nextDue(now)
			s.pushLocked(a)
		case errors.Is(err, mutex.ErrNotHeld) || errors.Is(err, mutex.ErrReleased) || a.inner.Err() != nil:
			// The lease has ended and says so through Done and Err.
			s.dropLocked(a)
		default:
			// Redis failed: the keys may still be held. Retry until the
			// lease's validity runs out.
			s.failures.Add(1)
			a.failures++
			a.due = a.retryDue(now)
			s.pushLocked(a)
		}
	}
	s.cond.Broadcast()
}

// leaseHeap orders leases by due time.
type leaseHeap []*autoLease

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *leaseHeap) Push(x any) {
	a := x.(*autoLease)
	a.index = len(*h)
	*h = append(*h, a)
}

func (h *leaseHeap) Pop() any {
	old := *h
	n := len(old)
	a := old[n-1]
	old[n-1] = nil
	a.index = -1
	*h = old[:n-1]
	return a
}

// retryBackoff spaces the retries of a failed renewal; Max is set per call
// from the lease's remaining validity.
var retryBackoff = backoff.Backoff{Min: 10 * time.Millisecond, Factor: 2, Jitter: true}
