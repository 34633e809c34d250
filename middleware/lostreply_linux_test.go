//go:build linux

package middleware_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// unreadBytes returns how many bytes wait, unread, in the receive queues of
// the established TCP connections accepted on port, from /proc/net/tcp.
func unreadBytes(t *testing.T, port int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	require.NoError(t, err)
	suffix := ":" + strings.ToUpper(strconv.FormatInt(int64(port), 16))
	if len(suffix) < 5 {
		suffix = ":" + strings.Repeat("0", 5-len(suffix)) + suffix[1:]
	}
	total := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], suffix) || f[3] != "01" {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		require.True(t, ok, "bad /proc/net/tcp line %q", line)
		n, err := strconv.ParseInt(rx, 16, 64)
		require.NoError(t, err)
		total += int(n)
	}
	return total
}

// TestRetriedLostReplyLeavesNoStrayLock makes the reply of an acquire get
// lost after Redis received the request: Redis is paused, the request
// reaches its socket, the proxy cuts the connection, and Redis resumes and
// runs the acquire with nobody to answer. The retried Lock must get the key,
// which means the first grant was released, and no key may stay behind.
func TestRetriedLostReplyLeavesNoStrayLock(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	c := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute}
	m := newMutex(t, c, cfg)
	direct := srv.Client(t)

	// Warm up the connection and the script cache.
	lease, err := m.TryLock(t.Context(), "k")
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(t.Context()))
	require.NoError(t, redistest.ResetStats(t.Context(), direct))

	l := middleware.Retry(
		middleware.WithAttempts(100),
		middleware.WithMinDelay(5*time.Millisecond),
		middleware.WithMaxDelay(50*time.Millisecond),
	)(m)
	srv.Pause(t)
	require.Zero(t, unreadBytes(t, srv.Port()))
	type result struct {
		lease mutex.Lease
		err   error
	}
	done := make(chan result, 1)
	go func() {
		lease, err := l.Lock(t.Context(), "k")
		done <- result{lease, err}
	}()
	require.Eventually(t, func() bool { return unreadBytes(t, srv.Port()) > 0 },
		10*time.Second, time.Millisecond, "the acquire never reached Redis")
	proxy.CutAll()
	srv.Resume(t)

	res := <-done
	require.NoError(t, res.err)
	stats, err := redistest.CommandStats(t.Context(), direct)
	require.NoError(t, err)
	// Each acquire attempt runs SET NX, and PTTL when it finds the key held.
	assert.EqualValues(t, 2, stats["set"]-stats["pttl"], "the lost acquire was granted, then the retried one: %v", stats)
	require.NoError(t, res.lease.Unlock(t.Context()))
	assert.Empty(t, keysLeft(t, direct, cfg.Prefix))
}
