package mutex

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
)

type claimHook struct{ onClaimDone func() }

func (h claimHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h claimHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h claimHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		a := cmd.Args()
		if len(a) > 1 && a[0] == "evalsha" && a[1] == fifoClaimScript.Hash() {
			if r, _ := cmd.(*redis.Cmd).Slice(); len(r) > 0 && r[0] == int64(1) {
				h.onClaimDone()
			}
		}
		return err
	}
}

var _ = net.Dial

// Close's fifo_leave of an enqueued waiter runs after that waiter's own
// fifo_claim granted it the lock: the leave deletes the lock key, yet Lock
// returns the lease as valid. Another Mutex then takes the same key.
func TestCloseLeavesAGrantedFIFOLeaseHeld(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	pfx := "iv:" + t.Name()
	c1 := srv.Client(t)
	m1, _ := New(c1, Config{Prefix: pfx, FIFO: true, TTL: 30 * time.Second})
	m2, _ := New(srv.Client(t), Config{Prefix: pfx, FIFO: true, TTL: 30 * time.Second})
	m3, _ := New(srv.Client(t), Config{Prefix: pfx, FIFO: true, TTL: 30 * time.Second})
	defer m2.Close()
	defer m3.Close()
	var fired atomic.Bool
	closed := make(chan struct{})
	c1.AddHook(claimHook{onClaimDone: func() {
		if fired.Swap(true) {
			return
		}
		// The claim's reply is here; Close lands now, before Lock returns.
		go func() { m1.Close(); close(closed) }()
		<-closed
	}})
	must(fifoClaimScript.Load(ctx, c1).Result())
	l := lockWhenReleased(t, m1, m2)
	t.Logf("lease from m1: err=%v deadline in %v", l.Err(), time.Until(l.(*lease).Deadline()))
	l2, err := m3.TryLock(ctx, "k1", "k2")
	if err == nil && l.Err() == nil {
		t.Fatalf("two holders: m1 lease %s (valid) and m3 lease %s on the same keys", l.Token(), l2.Token())
	}
	t.Logf("m3: %v", err)
	ks, _ := srv.Client(t).Keys(ctx, pfx+"*").Result()
	for _, k := range ks {
		v, _ := srv.Client(t).Get(ctx, k).Result()
		t.Logf("key %s = %q", k, v)
	}
	t.Logf("m1 lease value %s", l.(*lease).value)
}

// lateClaimHook makes the first fifo_claim reach Redis after the validity
// of the lease it grants has run out, and holds the release of that grant back until a later
// claim or join of the same Mutex has completed.
type lateClaimHook struct {
	late       time.Duration
	claimed    atomic.Bool
	released   atomic.Bool
	next       chan struct{} // closed when a request after the late claim completes
	nextOnce   atomic.Bool
	releaseRun chan struct{} // closed when the held-back release has run
}

func (h *lateClaimHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *lateClaimHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *lateClaimHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		sha := ""
		if len(a) > 1 && a[0] == "evalsha" {
			sha, _ = a[1].(string)
		}
		if sha == fifoReleaseScript.Hash() && h.claimed.Load() && !h.released.Swap(true) {
			select {
			case <-h.next:
			case <-time.After(5 * time.Second):
			}
			err := next(ctx, cmd)
			close(h.releaseRun)
			return err
		}
		if sha == fifoClaimScript.Hash() && !h.claimed.Load() {
			// The request reaches Redis late: it grants a lease whose
			// validity, counted from before the request, has run out.
			time.Sleep(h.late)
			err := next(ctx, cmd)
			h.claimed.Store(true)
			return err
		}
		err := next(ctx, cmd)
		if (sha == fifoClaimScript.Hash() || sha == fifoLockScript.Hash()) && h.claimed.Load() && !h.nextOnce.Swap(true) {
			close(h.next)
		}
		return err
	}
}

// A claim whose grant arrives after the lease's validity is released in
// the background. The waiter must not claim again under the same token: a
// second claim finds the grant still there and returns it as a fresh lease,
// which the release then takes away while its holder believes in it.
func TestFIFOGrantReleasedAsLateIsNotReclaimed(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	pfx := "iv:" + t.Name()
	ttl := time.Second
	c1 := srv.Client(t)
	h := &lateClaimHook{late: ttl + 100*time.Millisecond, next: make(chan struct{}), releaseRun: make(chan struct{})}
	c1.AddHook(h)
	m1 := must(New(c1, Config{Prefix: pfx, FIFO: true, TTL: ttl}))
	m2 := must(New(srv.Client(t), Config{Prefix: pfx, FIFO: true, TTL: 30 * time.Second}))
	defer m1.Close()
	defer m2.Close()
	must(fifoClaimScript.Load(ctx, c1).Result())
	must(fifoReleaseScript.Load(ctx, c1).Result())
	must(fifoLockScript.Load(ctx, c1).Result())

	l := lockWhenReleased(t, m1, m2)
	defer func() { _ = l.Unlock(ctx) }()
	select {
	case <-h.releaseRun:
	case <-time.After(10 * time.Second):
		t.Fatal("the late grant was never released")
	}
	want := l.Token() + ":" + strconv.FormatInt(l.Fence(), 10)
	for _, k := range []string{"k1", "k2"} {
		got, _ := srv.Client(t).Get(ctx, m1.redisKey(k)).Result()
		if got != want && l.Err() == nil {
			t.Errorf("key %s holds %q, yet the lease %q returned by Lock is valid", k, got, want)
		}
	}
}

// lockWhenReleased has m2 hold "k1" while m1 locks "k1" and "k2" and
// queues, then releases "k1" and returns the lease m1's Lock returns.
func lockWhenReleased(t *testing.T, m1, m2 *Mutex) Lease {
	t.Helper()
	ctx := context.Background()
	held := must(m2.TryLock(ctx, "k1"))
	res := make(chan Lease, 1)
	go func() {
		l, err := m1.Lock(ctx, "k1", "k2")
		if err != nil {
			t.Errorf("lock: %v", err)
		}
		res <- l
	}()
	f := m1.mode.(*fifo)
	waitFor(t, "enqueued", func() bool {
		m1.mu.Lock()
		defer m1.mu.Unlock()
		for _, w := range f.tokens {
			if w.enqueued {
				return true
			}
		}
		return false
	})
	must2(t, held.Unlock(ctx))
	l := <-res
	if l == nil {
		t.Fatal("Lock returned no lease")
	}
	return l
}
