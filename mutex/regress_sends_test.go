package mutex_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// An acquire whose first send ran (the key is taken) but whose reply was
// lost, and whose re-send by go-redis ends with an error reply (here
// NOAUTH; READONLY, LOADING or OOM after a failover or restart), has an
// unknown outcome: its key is released in the background, long before the
// TTL.
func TestResentAcquireEndingInErrorReplyIsReleased(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	require.NoError(t, admin.Ping(t.Context()).Err())
	proxy := newFaultProxy(t, srv.Addr())
	c := proxy.client(t) // go-redis defaults: MaxRetries 3
	p := prefix(t)
	m := newMutexOn(t, c, mutex.Config{Prefix: p, TTL: 5 * time.Second})
	// Load the acquire script, so that the faulted EVALSHA runs.
	warm, err := m.TryLock(t.Context(), "warm")
	require.NoError(t, err)
	require.NoError(t, warm.Unlock(t.Context()))
	rule := proxy.arm(dropReply, scriptOn(lockKey(p, "k")))
	go func() {
		<-rule.Answered()
		// Before go-redis's retry (backoff >= 8ms) reaches Redis.
		admin.ConfigSet(context.Background(), "requirepass", "secret")
	}()
	_, err = m.TryLock(t.Context(), "k")
	t.Logf("TryLock: %v", err)
	require.Error(t, err)
	require.NoError(t, admin.ConfigSet(t.Context(), "requirepass", "").Err())
	// Any unknown-outcome release would now succeed.
	time.Sleep(1500 * time.Millisecond)
	v, gerr := admin.Get(t.Context(), lockKey(p, "k")).Result()
	if gerr != redis.Nil {
		pttl := admin.PTTL(t.Context(), lockKey(p, "k")).Val()
		t.Errorf("orphan grant left in Redis after a failed TryLock: %q (pttl %v)", v, pttl)
	}
}
