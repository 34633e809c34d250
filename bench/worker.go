package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// workerEnv is set in the environment of a worker process: the binary
// re-executes itself as workers, which IsWorker recognises.
const workerEnv = "DISTLOCK_BENCHPEERS_WORKER"

// IsWorker reports whether this process was started by the runner as a
// worker.
func IsWorker() bool { return os.Getenv(workerEnv) == "1" }

// The scenarios.
const (
	scSerial   = "serial"
	scParallel = "parallel"
	scHot      = "hot"
	scFIFO     = "fifo"
	scSoak     = "soak"
)

var allScenarios = []string{scSerial, scParallel, scHot, scFIFO, scSoak}

// task is what the runner asks of one worker process: the first JSON line
// on the worker's standard input.
type task struct {
	Lib        string        `json:"lib"`
	Scenario   string        `json:"scenario"`
	Addr       string        `json:"addr"`
	Worker     int           `json:"worker"`
	Goroutines int           `json:"goroutines"`
	Prefix     string        `json:"prefix"`
	Hold       time.Duration `json:"hold"`
	TTL        time.Duration `json:"ttl"`
	Poll       time.Duration `json:"poll"`
	Leases     int           `json:"leases"`
	PoolSize   int           `json:"pool_size"`
}

// startMsg is the runner's second line: the measurement window, as Unix
// nanoseconds of the host clock that all processes share.
type startMsg struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// event is one wait on the hot key: when it began, when the lock was
// granted and when the holder began to unlock (Unix nanoseconds). Grant and
// Release are 0 for a wait still pending at the end of the window.
type event struct {
	Waiter  int   `json:"w"`
	Wait    int64 `json:"wait"`
	Grant   int64 `json:"grant"`
	Release int64 `json:"rel"`
}

// workerReport is a worker's line on its standard output: first one with
// Ready set, then one with the results (or Err).
type workerReport struct {
	Ready      bool    `json:"ready,omitempty"`
	Err        string  `json:"err,omitempty"`
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	LatNs      []int64 `json:"lat_ns,omitempty"`
	Events     []event `json:"events,omitempty"`
	CPUNs      int64   `json:"cpu_ns"`
	Mallocs    uint64  `json:"mallocs"`
	Held       int     `json:"held"`
	Lost       int     `json:"lost"`
	AcquireNs  int64   `json:"acquire_ns"`
}

// WorkerMain runs a worker process: it reads its task and the start line
// from standard input, writes reports to standard output and returns the
// exit code. It exits when its standard input closes.
func WorkerMain() int {
	dec := json.NewDecoder(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		_ = enc.Encode(workerReport{Err: err.Error()})
		return 1
	}
	var t task
	if err := dec.Decode(&t); err != nil {
		return fail(fmt.Errorf("read task: %w", err))
	}
	l, err := newLocker(t.Lib, libConfig{addr: t.Addr, prefix: t.Prefix, ttl: t.TTL, poll: t.Poll, poolSize: t.PoolSize})
	if err != nil {
		return fail(err)
	}
	defer l.close()

	var run func(startMsg) workerReport
	switch t.Scenario {
	case scSerial, scParallel:
		run, err = setupThroughput(l, t)
	case scHot, scFIFO:
		run, err = setupHot(l, t)
	case scSoak:
		run, err = setupSoak(l, t)
	default:
		err = fmt.Errorf("unknown scenario %q", t.Scenario)
	}
	if err != nil {
		return fail(err)
	}
	if err := enc.Encode(workerReport{Ready: true}); err != nil {
		return 1
	}
	var s startMsg
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return 0
		}
		return fail(fmt.Errorf("read start: %w", err))
	}
	rep := run(s)
	if err := enc.Encode(rep); err != nil {
		return 1
	}
	// Wait for the runner to close standard input before cleaning up, so
	// that the cleanup's Redis traffic falls outside every measurement.
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// errCounter counts errors and keeps the first.
type errCounter struct {
	n     atomic.Int64
	mu    sync.Mutex
	first string
}

func (e *errCounter) add(err error) {
	if e.n.Add(1) == 1 {
		e.mu.Lock()
		e.first = err.Error()
		e.mu.Unlock()
	}
}

func (e *errCounter) fill(r *workerReport) {
	r.Errors = e.n.Load()
	e.mu.Lock()
	r.FirstError = e.first
	e.mu.Unlock()
}

func sleepUntil(ns int64) {
	if d := time.Until(time.Unix(0, ns)); d > 0 {
		time.Sleep(d)
	}
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// callGrace bounds a Lock or Unlock call of the workers: how long after its
// start (setup, warm-up, release) or after the window (measurement) a call
// may block before it fails.
const callGrace = 10 * time.Second

func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callGrace)
}

// setupThroughput prepares Lock+Unlock loops, each goroutine on a key of
// its own, and warms up connections and scripts.
func setupThroughput(l locker, t task) (func(startMsg) workerReport, error) {
	keys := make([]string, t.Goroutines)
	for g := range keys {
		keys[g] = t.Prefix + ":w" + strconv.Itoa(t.Worker) + ":g" + strconv.Itoa(g)
	}
	if err := warmUp(l, keys, 3); err != nil {
		return nil, err
	}
	return func(s startMsg) workerReport {
		var (
			ops  atomic.Int64
			errs errCounter
			wg   sync.WaitGroup
			lats = make([][]int64, len(keys))
			gate = make(chan struct{})
		)
		// A call still blocked a while after the window fails rather than
		// holding up the report.
		ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, s.End).Add(callGrace))
		defer cancel()
		perG := max(1<<16/len(keys), 1024)
		for g, key := range keys {
			lats[g] = make([]int64, 0, perG)
			wg.Go(func() {
				<-gate
				for {
					start := time.Now()
					h, err := l.lock(ctx, key)
					if err == nil {
						err = l.unlock(ctx, h)
					}
					end := time.Now()
					if end.UnixNano() > s.End {
						return
					}
					if err != nil {
						errs.add(err)
						time.Sleep(time.Millisecond)
						continue
					}
					ops.Add(1)
					lats[g] = append(lats[g], int64(end.Sub(start)))
				}
			})
		}
		sleepUntil(s.Start)
		cpu0, m0 := processCPU(), mallocs()
		close(gate)
		sleepUntil(s.End)
		cpu1, m1 := processCPU(), mallocs()
		n := ops.Load()
		wg.Wait()
		rep := workerReport{Ops: n, CPUNs: int64(cpu1 - cpu0), Mallocs: m1 - m0}
		for _, gl := range lats {
			rep.LatNs = append(rep.LatNs, gl...)
		}
		errs.fill(&rep)
		return rep
	}, nil
}

// warmUp locks and unlocks each key rounds times from a goroutine per key.
func warmUp(l locker, keys []string, rounds int) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, key := range keys {
		wg.Go(func() {
			for range rounds {
				ctx, cancel := opContext()
				h, err := l.lock(ctx, key)
				if err == nil {
					err = l.unlock(ctx, h)
				}
				cancel()
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("warm-up Lock+Unlock of %s: %w", key, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// setupHot prepares waiters on one key: each locks it, holds it for
// t.Hold, unlocks it and asks again at once. To warm up, every waiter
// takes the key once, in contention with the other processes, so that
// one-time costs of a first wait (such as a pub/sub subscription) fall
// outside the window.
func setupHot(l locker, t task) (func(startMsg) workerReport, error) {
	key := t.Prefix + ":hot"
	warm := make([]string, t.Goroutines)
	for g := range warm {
		warm[g] = key
	}
	if err := warmUp(l, warm, 1); err != nil {
		return nil, err
	}
	return func(s startMsg) workerReport {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stop := time.AfterFunc(time.Until(time.Unix(0, s.End)), cancel)
		defer stop.Stop()
		var (
			errs   errCounter
			wg     sync.WaitGroup
			mu     sync.Mutex
			events []event
			gate   = make(chan struct{})
		)
		for g := range t.Goroutines {
			id := t.Worker*100000 + g
			wg.Go(func() {
				var mine []event
				defer func() {
					mu.Lock()
					events = append(events, mine...)
					mu.Unlock()
				}()
				<-gate
				for ctx.Err() == nil {
					wait := time.Now().UnixNano()
					h, err := l.lock(ctx, key)
					if err != nil {
						if ctx.Err() != nil {
							mine = append(mine, event{Waiter: id, Wait: wait})
							return
						}
						errs.add(err)
						time.Sleep(time.Millisecond)
						continue
					}
					grant := time.Now().UnixNano()
					time.Sleep(t.Hold)
					release := time.Now().UnixNano()
					uctx, ucancel := opContext()
					if err := l.unlock(uctx, h); err != nil {
						errs.add(fmt.Errorf("unlock: %w", err))
					}
					ucancel()
					mine = append(mine, event{Waiter: id, Wait: wait, Grant: grant, Release: release})
				}
			})
		}
		sleepUntil(s.Start)
		cpu0 := processCPU()
		close(gate)
		sleepUntil(s.End)
		cpu1 := processCPU()
		wg.Wait()
		rep := workerReport{Events: events, CPUNs: int64(cpu1 - cpu0)}
		for _, e := range events {
			if e.Grant != 0 && e.Grant < s.End {
				rep.Ops++
			}
		}
		errs.fill(&rep)
		return rep
	}, nil
}

// soakAcquirers is how many goroutines acquire and release the leases of
// the auto-extension scenario.
const soakAcquirers = 32

// setupSoak acquires t.Leases leases on distinct keys, kept alive by the
// library's extension, and returns a run that holds them over the window
// and then releases them.
func setupSoak(l locker, t task) (func(startMsg) workerReport, error) {
	leases := make([]heldLease, t.Leases)
	var (
		errs errCounter
		wg   sync.WaitGroup
		next atomic.Int64
	)
	began := time.Now()
	for range soakAcquirers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(leases) {
					return
				}
				ctx, cancel := opContext()
				h, err := l.hold(ctx, t.Prefix+":lease:"+strconv.Itoa(i))
				cancel()
				if err != nil {
					errs.add(err)
					continue
				}
				leases[i] = h
			}
		})
	}
	wg.Wait()
	acquire := time.Since(began)
	if n := errs.n.Load(); n > 0 {
		errs.mu.Lock()
		defer errs.mu.Unlock()
		return nil, fmt.Errorf("%d of %d leases not acquired, first error: %s", n, t.Leases, errs.first)
	}
	return func(s startMsg) workerReport {
		sleepUntil(s.Start)
		cpu0 := processCPU()
		sleepUntil(s.End)
		cpu1 := processCPU()
		rep := workerReport{Held: len(leases), CPUNs: int64(cpu1 - cpu0), AcquireNs: int64(acquire)}
		var lost atomic.Int64
		for _, h := range leases {
			if h.lost() {
				lost.Add(1)
			}
		}
		// Release them all; a release that finds the lease gone counts as
		// lost too.
		next.Store(0)
		var released atomic.Int64
		for range soakAcquirers {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= len(leases) {
						return
					}
					if leases[i].lost() {
						continue
					}
					ctx, cancel := opContext()
					err := leases[i].release(ctx)
					cancel()
					if err != nil {
						lost.Add(1)
						errs.add(fmt.Errorf("release: %w", err))
						continue
					}
					released.Add(1)
				}
			})
		}
		wg.Wait()
		rep.Lost = int(lost.Load())
		rep.Ops = released.Load()
		errs.fill(&rep)
		return rep
	}, nil
}
