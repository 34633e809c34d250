package middleware_test

import (
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// go-redis follows MOVED and ASK redirections itself, but gives up after
// ClusterOptions.MaxRedirects attempts (3 by default), which refused
// connections and TRYAGAIN replies use up too, and then returns the last
// redirection: during a failover or a slot migration, Lock can return
// "acquire: MOVED <slot> <addr>". IsTransient counts it as transient, and
// Retry retries it.
//
// This test makes the redirection come back every time, with the first
// step of a slot migration applied on the source only: the source sends
// the request to the target with ASK, and the target, which is not
// importing the slot, sends it back with MOVED.
func TestIsTransientClusterRedirect(t *testing.T) {
	c := redistest.StartCluster(t)
	ctx := t.Context()
	const key = "redirect"
	rkey := "t:{" + key + "}"
	slot := redistest.Slot(rkey)
	source := c.PrimaryFor(t, rkey)
	var target *redistest.Server
	for _, p := range c.Primaries(t) {
		if p != source {
			target = p
		}
	}
	id, err := target.Client(t).ClusterMyID(ctx).Result()
	require.NoError(t, err)
	require.NoError(t, source.Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", id).Err())
	defer func() {
		require.NoError(t, source.Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "STABLE").Err())
	}()

	m := newMutex(t, c.Client(t), mutex.Config{Prefix: "t"})
	_, err = m.Lock(ctx, key)
	require.Error(t, err)
	t.Logf("Lock: %v", err)
	require.True(t, redis.HasErrorPrefix(err, "MOVED ") || redis.HasErrorPrefix(err, "ASK "), "not a redirection: %v", err)
	assert.True(t, middleware.IsTransient(err), "IsTransient(%q) = false", err)

	_, err = middleware.Retry(middleware.WithAttempts(3))(m).Lock(ctx, key)
	t.Logf("Retry(Lock): %v", err)
	assert.Contains(t, err.Error(), "gave up after 3 attempts", "Retry did not retry the redirection")
}
