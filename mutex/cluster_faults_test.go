package mutex_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// dropConn swallows every write that carries an SSUBSCRIBE: the request is
// "written" but never reaches Redis, so its confirmation never comes (as
// with a request written into a dead connection, or a user whose ACL
// lacks SSUBSCRIBE).
type dropConn struct{ net.Conn }

func (c dropConn) Write(b []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(b), []byte("ssubscribe")) {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func dropSSubscribe(o *redis.ClusterOptions) {
	o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return dropConn{c}, nil
	}
}

// sameSlotKeys returns two keys whose lock keys under p share a slot.
func sameSlotKeys(p string) (string, string) {
	first := map[int]string{}
	for i := 0; ; i++ {
		k := fmt.Sprintf("s%d", i)
		slot := redistest.Slot(p + ":{" + k + "}")
		if o, ok := first[slot]; ok {
			return o, k
		}
		first[slot] = k
	}
}

// A FIFO waiter on a Cluster for two keys of one slot waits for the
// confirmations of two per-key wake channels for one TTL in all: when they
// never come, it still joins the queue and gets the lock once it is free.
func TestClusterFIFOWaiterProceedsWithoutConfirmations(t *testing.T) {
	cl := redistest.SharedCluster(t)
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("keys=%d", n), func(t *testing.T) {
			ctx := t.Context()
			p := prefix(t)
			cfg := mutex.Config{Prefix: p, TTL: 300 * time.Millisecond, FIFO: true}
			holder, err := mutex.New(cl.Client(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			waiter, err := mutex.New(cl.Client(t, dropSSubscribe), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer waiter.Close()
			a, b := sameSlotKeys(p)
			keys := []string{a, b}[:n]
			hl := must[mutex.Lease](t)(holder.Lock(ctx, a))
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			start := time.Now()
			done := lockAsync(wctx, waiter, keys...)
			time.Sleep(50 * time.Millisecond)
			if err := hl.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			g := <-done
			if g.err != nil {
				t.Fatalf("Lock(%v) after %v: %v (the lock was free after 50ms, TTL 300ms)", keys, time.Since(start).Round(time.Millisecond), g.err)
			}
			t.Logf("Lock(%v) granted after %v", keys, g.at.Sub(start).Round(time.Millisecond))
			_ = g.lease.Unlock(ctx)
		})
	}
}

// A FIFO Lock on keys of two slots whose last group is handed over by a
// release returns at once and confirms the handover in the background;
// the confirmation gives the whole lease its TTL, beyond the handover's
// short validity (FIFOLiveness).
func TestClusterFIFOMultiSlotHandoverGetsTheTTL(t *testing.T) {
	ctx := t.Context()
	p := prefix(t)
	cfg := mutex.Config{Prefix: p, TTL: 10 * time.Second, FIFO: true}
	m, c := clusterMutex(t, cfg)
	holder, _ := clusterMutex(t, cfg)
	keys := spread("k", 2)
	last := keys[0]
	if redistest.Slot(p+":{"+keys[1]+"}") > redistest.Slot(p+":{"+last+"}") {
		last = keys[1]
	}
	hl := must[mutex.Lease](t)(holder.Lock(ctx, last))
	done := lockAsync(ctx, m, keys...)
	q := p + ":{" + last + "}:q"
	for must[int64](t)(c.ZCard(ctx, q).Result()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := hl.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	g := <-done
	if g.err != nil {
		t.Fatal(g.err)
	}
	defer g.lease.Unlock(ctx)
	d, _ := mutex.Deadline(g.lease)
	t.Logf("deadline right after Lock: %v", time.Until(d).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	pttl := must[time.Duration](t)(c.PTTL(ctx, p+":{"+last+"}").Result())
	d, _ = mutex.Deadline(g.lease)
	if err := g.lease.Err(); err != nil {
		t.Fatalf("2s into a 10s lease: Err = %v (deadline %v; the key's PTTL in Redis is %v)", err, time.Until(d).Round(time.Millisecond), pttl)
	}
}

// failRelease makes the release script fail, without reaching Redis, for
// calls on the Redis key rkey while on is set.
type failRelease struct {
	rkey string
	on   atomic.Bool
}

func (f *failRelease) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failRelease) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (f *failRelease) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.on.Load() && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			args := cmd.Args()
			if len(args) > 3 && args[3] == f.rkey {
				err := errors.New("injected failure")
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

// An Unlock of a multi-slot lease that fails on one group (a Redis error)
// has released the others: the lease ends, Extend reports it released,
// and Unlock called again releases the rest.
func TestClusterMultiSlotPartialUnlock(t *testing.T) {
	ctx := t.Context()
	p := prefix(t)
	cfg := mutex.Config{Prefix: p, TTL: 5 * time.Second}
	keys := spread("k", 2)
	fr := &failRelease{rkey: p + ":{" + keys[1] + "}"}
	c := redistest.SharedCluster(t).Client(t)
	c.AddHook(fr)
	m, err := mutex.New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	other, _ := clusterMutex(t, cfg)
	l := must[mutex.Lease](t)(m.Lock(ctx, keys...))
	fr.on.Store(true)
	if err := l.Unlock(ctx); err == nil {
		t.Fatal("Unlock succeeded despite the injected failure")
	} else {
		t.Logf("Unlock: %v", err)
	}
	fr.on.Store(false)
	ol, err := other.TryLock(ctx, keys[0])
	if err != nil {
		t.Fatalf("other TryLock(%q): %v", keys[0], err)
	}
	defer ol.Unlock(ctx)
	if err := l.Err(); err == nil {
		t.Errorf("lease on %v reports held (Err nil) while another owner holds %q", keys, keys[0])
	}
	select {
	case <-l.Done():
	default:
		t.Error("Done open after a partial Unlock")
	}
	if err := l.Extend(ctx); !errors.Is(err, mutex.ErrReleased) {
		t.Errorf("Extend = %v, want ErrReleased", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("second Unlock = %v", err)
	}
	if st := must[mutex.Status](t)(m.Check(ctx, keys[1])); st != mutex.Available {
		t.Fatalf("%q is %v after the second Unlock", keys[1], st)
	}
	if err := l.Unlock(ctx); !errors.Is(err, mutex.ErrReleased) {
		t.Fatalf("third Unlock = %v", err)
	}
}

// Close while a multi-slot Lock holds its first group and waits for the
// second: Lock returns ErrClosed and leaves nothing held.
func TestClusterCloseDuringMultiSlotLock(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			ctx := t.Context()
			p := prefix(t)
			cfg := mutex.Config{Prefix: p, TTL: 2 * time.Second, FIFO: fifo}
			c := redistest.SharedCluster(t).Client(t)
			m, err := mutex.New(c, cfg)
			if err != nil {
				t.Fatal(err)
			}
			holder, _ := clusterMutex(t, cfg)
			keys := spread("k", 3)
			last := keys[0]
			for _, k := range keys {
				if redistest.Slot(p+":{"+k+"}") > redistest.Slot(p+":{"+last+"}") {
					last = k
				}
			}
			hl := must[mutex.Lease](t)(holder.Lock(ctx, last))
			done := lockAsync(ctx, m, keys...)
			time.Sleep(300 * time.Millisecond)
			t0 := time.Now()
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("Close took %v", time.Since(t0).Round(time.Millisecond))
			g := <-done
			t.Logf("Lock returned %v after Close", g.at.Sub(t0).Round(time.Millisecond))
			if !errors.Is(g.err, mutex.ErrClosed) {
				t.Errorf("Lock = %v, %v; want ErrClosed", g.lease, g.err)
			}
			for _, k := range keys {
				if k == last {
					continue
				}
				if st := must[mutex.Status](t)(holder.Check(ctx, k)); st != mutex.Available {
					t.Errorf("%q is %v after Close", k, st)
				}
			}
			_ = hl.Unlock(ctx)
		})
	}
}

// A primary that serves two slots with waiters is killed: the subscriber
// of that node holds channels of both slots; both must follow the
// promoted replica and be woken by the releases, long before the TTL.
func TestClusterKillPrimaryWakesWaitersOfTwoSlots(t *testing.T) {
	cl := redistest.StartCluster(t)
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			ctx := t.Context()
			p := prefix(t)
			cfg := mutex.Config{Prefix: p, TTL: 30 * time.Second, FIFO: fifo}
			holder, err := mutex.New(cl.Client(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			waiter, err := mutex.New(cl.Client(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer waiter.Close()
			var keys []string
			owner := cl.PrimaryFor(t, p+":{a0}")
			for i := 0; len(keys) < 2; i++ {
				k := fmt.Sprintf("a%d", i)
				if cl.PrimaryFor(t, p+":{"+k+"}") == owner {
					keys = append(keys, k)
				}
			}
			var leases []mutex.Lease
			for _, k := range keys {
				leases = append(leases, must[mutex.Lease](t)(holder.Lock(ctx, k)))
			}
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			var dones []<-chan grant
			for _, k := range keys {
				dones = append(dones, lockAsync(wctx, waiter, k))
			}
			node := admin(t, owner)
			for _, k := range keys {
				pattern := p + ":{" + k + "}"
				if fifo {
					pattern += ":w:*"
				}
				for len(must[[]string](t)(node.PubSubShardChannels(ctx, pattern).Result())) != 1 {
					time.Sleep(5 * time.Millisecond)
				}
			}
			cl.KillPrimary(t, p+":{"+keys[0]+"}")
			start := time.Now()
			for _, l := range leases {
				for {
					err := l.Unlock(ctx)
					if err == nil || errors.Is(err, mutex.ErrNotHeld) {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			for i, d := range dones {
				g := <-d
				if g.err != nil {
					t.Errorf("waiter for %q: %v after %v", keys[i], g.err, time.Since(start).Round(time.Millisecond))
					continue
				}
				t.Logf("waiter for %q granted %v after the unlock", keys[i], g.at.Sub(start).Round(time.Millisecond))
				_ = g.lease.Unlock(ctx)
			}
		})
	}
}
