package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// A hot workload: goroutines of several Mutexes, raw and wrapped in
// middleware.Retry, in plain and FIFO mode, lock and unlock a few hot
// keys in a loop while the test breaks the deployment under them. It
// records every grant with the interval in which the lease was surely
// valid, and every error a caller saw, for the checks of hotLoad.check.

// hotLocker is one Locker of a hot workload.
type hotLocker struct {
	name   string
	prefix string       // of its Mutex: plain and FIFO Mutexes use their own
	l      mutex.Locker // the Mutex, or the Mutex wrapped in Retry
	retry  bool
}

// hotGrant is one lease of a hot workload.
type hotGrant struct {
	who   string
	key   string    // "<prefix>/<key>": Mutexes of one prefix exclude each other
	got   time.Time // Lock returned
	end   time.Time // Unlock started, or the lease's validity ended if sooner
	fence int64
}

// hotError is an error a caller of a hot workload saw.
type hotError struct {
	who string
	op  string // Lock, Extend or Unlock
	at  time.Time
	err error
}

type hotConfig struct {
	keys []string
	// lockTimeout bounds a Lock call: one that ends with it is a stranded
	// waiter.
	lockTimeout time.Duration
	hold        time.Duration
	// extend makes each holder Extend its lease halfway through the hold.
	extend bool
	// perLocker is how many goroutines run each Locker, taking the keys
	// in turn.
	perLocker int
}

type hotLoad struct {
	cfg  hotConfig
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	grants   []hotGrant
	errs     []hotError
	stranded []string
}

// newHotLockers makes fifo and plain Mutexes, each on a client of its own
// from newClient, and returns each raw and wrapped in Retry.
func newHotLockers(t testing.TB, newClient func() redis.UniversalClient, ttl time.Duration, plain, fifo int) []*hotLocker {
	t.Helper()
	var out []*hotLocker
	add := func(mode string, n int, cfg mutex.Config) {
		for i := range n {
			m, err := mutex.New(newClient(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			name := fmt.Sprintf("%s%d", mode, i)
			out = append(out,
				&hotLocker{name: name, prefix: cfg.Prefix, l: m},
				&hotLocker{name: name + "+retry", prefix: cfg.Prefix, retry: true, l: middleware.Retry(
					middleware.WithAttempts(1000),
					middleware.WithMinDelay(20*time.Millisecond),
					middleware.WithMaxDelay(250*time.Millisecond),
				)(m)},
			)
		}
	}
	add("plain", plain, mutex.Config{Prefix: "hot-plain", TTL: ttl})
	add("fifo", fifo, mutex.Config{Prefix: "hot-fifo", TTL: ttl, FIFO: true})
	return out
}

func startHotLoad(lockers []*hotLocker, cfg hotConfig) *hotLoad {
	w := &hotLoad{cfg: cfg, stop: make(chan struct{})}
	if w.cfg.perLocker == 0 {
		w.cfg.perLocker = 1
	}
	for _, hl := range lockers {
		for j := range w.cfg.perLocker {
			w.wg.Go(func() { w.run(hl, w.cfg.keys[j%len(w.cfg.keys)]) })
		}
	}
	return w
}

// sleep sleeps for d, or less if the workload stops.
func (w *hotLoad) sleep(d time.Duration) {
	select {
	case <-w.stop:
	case <-time.After(d):
	}
}

func (w *hotLoad) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *hotLoad) note(hl *hotLocker, op string, err error) {
	w.mu.Lock()
	w.errs = append(w.errs, hotError{who: hl.name, op: op, at: time.Now(), err: err})
	w.mu.Unlock()
}

// run locks key again and again, so that each key has goroutines of its
// own, and a key whose shard is down does not hold up the others.
func (w *hotLoad) run(hl *hotLocker, key string) {
	for !w.stopped() {
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.lockTimeout)
		start := time.Now()
		l, err := hl.l.Lock(ctx, key)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				w.mu.Lock()
				w.stranded = append(w.stranded, fmt.Sprintf("%s: Lock(%q) from %s returned after %v: %v",
					hl.name, key, start.Format("15:04:05.000"), time.Since(start).Round(time.Millisecond), err))
				w.mu.Unlock()
			} else {
				w.note(hl, "Lock", err)
			}
			// A refused connection fails at once: do not spin.
			w.sleep(20 * time.Millisecond)
			continue
		}
		got := time.Now()
		if w.cfg.extend {
			time.Sleep(w.cfg.hold / 2)
			w.extend(hl, l)
			time.Sleep(w.cfg.hold / 2)
		} else {
			time.Sleep(w.cfg.hold)
		}
		end := time.Now()
		deadline, _ := mutex.Deadline(l)
		if deadline.Before(end) {
			end = deadline
		}
		w.mu.Lock()
		w.grants = append(w.grants, hotGrant{who: hl.name, key: hl.prefix + "/" + key, got: got, end: end, fence: l.Fence()})
		w.mu.Unlock()
		w.unlock(hl, l, deadline)
	}
}

// extend extends l, again after a transient error while l is valid.
func (w *hotLoad) extend(hl *hotLocker, l mutex.Lease) {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := l.Extend(ctx)
		cancel()
		if err == nil {
			return
		}
		w.note(hl, "Extend", err)
		if !middleware.IsTransient(err) || l.Err() != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unlock releases l, again after a transient error while l is valid, as
// the documentation of Unlock allows.
func (w *hotLoad) unlock(hl *hotLocker, l mutex.Lease, deadline time.Time) {
	for op := "Unlock"; ; op = "Unlock again" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := l.Unlock(ctx)
		cancel()
		if err == nil {
			return
		}
		w.note(hl, op, err)
		if !middleware.IsTransient(err) || !time.Now().Before(deadline) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// halt stops the workload and waits for its goroutines, which each end
// within a Lock call and a hold.
func (w *hotLoad) halt(t testing.TB) {
	t.Helper()
	close(w.stop)
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.lockTimeout + 10*time.Second):
		t.Fatalf("the workload's goroutines did not end within %v of the stop", w.cfg.lockTimeout+10*time.Second)
	}
}

// snapshot returns the grants so far, sorted by the time Lock returned.
func (w *hotLoad) snapshot() []hotGrant {
	w.mu.Lock()
	defer w.mu.Unlock()
	gs := slices.Clone(w.grants)
	slices.SortFunc(gs, func(a, b hotGrant) int { return a.got.Compare(b.got) })
	return gs
}

// waitProgress waits until every Locker got a lease after since, and
// returns when the last of them did. It fails the test after bound.
func (w *hotLoad) waitProgress(t testing.TB, lockers []*hotLocker, since time.Time, bound time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		first := make(map[string]time.Time)
		for _, g := range w.snapshot() {
			if g.got.After(since) {
				if _, ok := first[g.who]; !ok {
					first[g.who] = g.got
				}
			}
		}
		var missing []string
		var last time.Time
		for _, hl := range lockers {
			at, ok := first[hl.name]
			if !ok {
				missing = append(missing, hl.name)
			} else if at.After(last) {
				last = at
			}
		}
		if len(missing) == 0 {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lease for %v within %v after the failover", missing, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firstGrantAfter returns the first lease, on one of keys ("<prefix>/<key>"),
// that Redis granted after at (its fence, the server's clock at the grant,
// is later: the servers run on this machine, on its clock).
func (w *hotLoad) firstGrantAfter(at time.Time, keys ...string) (hotGrant, bool) {
	var best hotGrant
	found := false
	for _, g := range w.snapshot() {
		if g.fence > at.UnixMicro() && slices.Contains(keys, g.key) && (!found || g.fence < best.fence) {
			best, found = g, true
		}
	}
	return best, found
}

// maxGap returns the longest time without a grant of one of keys, between
// two grants in [from, to] (by fence).
func (w *hotLoad) maxGap(from, to time.Time, keys ...string) time.Duration {
	var fences []int64
	for _, g := range w.snapshot() {
		if slices.Contains(keys, g.key) {
			fences = append(fences, g.fence)
		}
	}
	slices.Sort(fences)
	var gap int64
	for i := 1; i < len(fences); i++ {
		if fences[i] < from.UnixMicro() || fences[i-1] > to.UnixMicro() {
			continue
		}
		gap = max(gap, fences[i]-fences[i-1])
	}
	return time.Duration(gap) * time.Microsecond
}

// check reports what the workload saw: it fails the test for a stranded
// waiter, for an error of a raw Mutex that is neither transient (per
// middleware.IsTransient) nor a documented outcome, for any error of a
// Retry-wrapped Lock, and for leases out of fence order. Two valid leases of
// one key at once, and an Extend or a first Unlock that finds its lease's
// key taken or gone, fail the test with exclusive set; without it they are
// only logged (a forced failover may lose a grant that was not replicated).
func (w *hotLoad) check(t testing.TB, lockers []*hotLocker, exclusive bool) {
	t.Helper()
	w.mu.Lock()
	stranded, errs := slices.Clone(w.stranded), slices.Clone(w.errs)
	w.mu.Unlock()
	for _, s := range stranded {
		t.Errorf("stranded waiter: %s", s)
	}
	retry := make(map[string]bool)
	for _, hl := range lockers {
		retry[hl.name] = hl.retry
	}
	counts := make(map[string]int)
	var kinds []string
	for _, e := range errs {
		kind := fmt.Sprintf("%s %s: %s", e.op, map[bool]string{false: "raw", true: "retry"}[retry[e.who]], scrubPorts(e.err.Error()))
		if counts[kind] == 0 {
			kinds = append(kinds, kind)
		}
		counts[kind]++
		switch {
		case e.op == "Lock" && retry[e.who]:
			t.Errorf("%s: a Retry-wrapped Lock failed: %v", e.who, e.err)
		case middleware.IsTransient(e.err):
		case exclusive && (e.op == "Extend" || e.op == "Unlock") && errors.Is(e.err, mutex.ErrNotHeld) &&
			strings.Contains(e.err.Error(), "no longer held"):
			t.Errorf("%s: a lease was lost: %s at %s: %v", e.who, e.op, e.at.Format("15:04:05.000"), e.err)
		case e.op != "Lock" && errors.Is(e.err, mutex.ErrNotHeld):
			// Documented: a lease lost in a forced failover, or whose
			// validity ran out while Unlock was retried, or an Unlock
			// called again whose first call released the keys after all.
		default:
			t.Errorf("%s: %s failed at %s with an error that is not transient: %v (%T)",
				e.who, e.op, e.at.Format("15:04:05.000"), e.err, errors.Unwrap(e.err))
		}
	}
	for _, k := range kinds {
		t.Logf("%5d × %s", counts[k], k)
	}

	gs := w.snapshot()
	perKey := make(map[string][]hotGrant)
	for _, g := range gs {
		perKey[g.key] = append(perKey[g.key], g)
	}
	keys := make([]string, 0, len(perKey))
	for k := range perKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		byGot := perKey[k]
		byEnd := slices.Clone(byGot)
		slices.SortFunc(byEnd, func(a, b hotGrant) int { return a.end.Compare(b.end) })
		// Overlaps: a lease returned while an earlier one was still valid.
		var open hotGrant
		for i, g := range byGot {
			if i > 0 && g.got.Before(open.end) {
				msg := fmt.Sprintf("%s: two valid leases: %s held it from %s to %s (fence %d), %s got it at %s (fence %d)",
					k, open.who, open.got.Format("15:04:05.000000"), open.end.Format("15:04:05.000000"), open.fence,
					g.who, g.got.Format("15:04:05.000000"), g.fence)
				if exclusive {
					t.Error(msg)
				} else {
					t.Log(msg)
				}
			}
			if g.end.After(open.end) {
				open = g
			}
		}
		// Fences: a lease returned after another one ended has a greater
		// fence.
		var p int
		var maxFence int64
		for _, g := range byGot {
			for p < len(byEnd) && !byEnd[p].end.After(g.got) {
				maxFence = max(maxFence, byEnd[p].fence)
				p++
			}
			if g.fence <= maxFence {
				t.Errorf("%s: %s got fence %d at %s, not above the fence %d of a lease that had ended",
					k, g.who, g.fence, g.got.Format("15:04:05.000000"), maxFence)
			}
		}
	}
	var per []string
	for _, k := range keys {
		per = append(per, fmt.Sprintf("%s=%d", k, len(perKey[k])))
	}
	t.Logf("%d leases: %s", len(gs), strings.Join(per, " "))
}

// scrubPorts replaces the port numbers of 127.0.0.1 addresses in msg, so
// that errors that differ only in the node can be counted together.
func scrubPorts(msg string) string {
	var b strings.Builder
	for {
		i := strings.Index(msg, "127.0.0.1:")
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		i += len("127.0.0.1:")
		b.WriteString(msg[:i])
		b.WriteString("PORT")
		msg = msg[i:]
		j := 0
		for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' {
			j++
		}
		msg = msg[j:]
	}
}
