package mutex_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// releaseOn matches the release script call (one key) of lock key k.
func releaseOn(k string) func(args []string) bool {
	return func(args []string) bool {
		return len(args) >= 4 && (strings.EqualFold(args[0], "EVALSHA") || strings.EqualFold(args[0], "EVAL")) &&
			args[2] == "1" && args[3] == k
	}
}

// An Unlock whose request fails after it was written (its connection
// stalls past the caller's context) wakes the Mutex's own waiter at once,
// whose attempt finds the key still held. When the release then reaches
// Redis, its announcement, which names the Mutex's own id, is heeded: the
// waiter gets the key at once, not at the holder's TTL.
func TestLateOwnReleaseWakesOwnWaiter(t *testing.T) {
	srv := redistest.Start(t)
	p := newFaultProxy(t, srv.Addr())
	ttl := 20 * time.Second
	cfg := mutex.Config{Prefix: prefix(t), TTL: ttl}
	m := newMutexOn(t, p.client(t, func(o *redis.Options) {
		o.MaxRetries = -1
		o.ContextTimeoutEnabled = true
	}), cfg)
	other := newMutex(t, srv, cfg)
	warmUp(t, m, other, "w")

	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	held := must[mutex.Lease](t)(m.Lock(ctx, "k"))
	got := lockAsync(ctx, m, "k")
	time.Sleep(300 * time.Millisecond) // the waiter subscribed and found k held

	rule := p.arm(holdBack, releaseOn(lockKey(cfg.Prefix, "k")))
	uctx, ucancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := held.Unlock(uctx)
	ucancel()
	require.Error(t, err, "the held-back release should have failed")
	<-rule.Hit()
	time.Sleep(300 * time.Millisecond) // the woken waiter's attempt found k held

	rule.Release()
	select {
	case <-rule.Answered():
	case <-time.After(5 * time.Second):
		t.Fatal("release never ran")
	}
	g, ok := receiveWithin(got, 3*time.Second)
	if !ok {
		t.Fatalf("k is free, but the waiter of the releasing Mutex is still waiting (until the TTL %v)", ttl)
	}
	require.NoError(t, g.err)
	unlockIfHeld(g)
}

// An Unlock whose release runs but whose reply is lost is sent again by
// go-redis (default retries); the re-send finds the key gone and returns 0
// without error. The first send's announcement names the Mutex's own id
// and is ignored, so release itself wakes the Mutex's own waiter: it gets
// the key at once, not at the TTL.
func TestResentReleaseWakesOwnWaiter(t *testing.T) {
	srv := redistest.Start(t)
	p := newFaultProxy(t, srv.Addr())
	ttl := 20 * time.Second
	cfg := mutex.Config{Prefix: prefix(t), TTL: ttl}
	m := newMutexOn(t, p.client(t), cfg)
	other := newMutex(t, srv, cfg)
	warmUp(t, m, other, "w")

	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	held := must[mutex.Lease](t)(m.Lock(ctx, "k"))
	got := lockAsync(ctx, m, "k")
	time.Sleep(300 * time.Millisecond) // the waiter subscribed and found k held

	rule := p.arm(dropReply, releaseOn(lockKey(cfg.Prefix, "k")))
	require.NoError(t, held.Unlock(ctx))
	select {
	case <-rule.Answered():
	default:
		t.Fatal("the release's reply was not dropped")
	}
	g, ok := receiveWithin(got, 3*time.Second)
	if !ok {
		t.Fatalf("k is free, but the waiter of the releasing Mutex is still waiting (until the TTL %v)", ttl)
	}
	require.NoError(t, g.err)
	unlockIfHeld(g)
}
