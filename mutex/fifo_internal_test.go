package mutex

import (
	"context"
	"net"
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
		t.Skip("no lease")
	}
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
