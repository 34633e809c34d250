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
// which means the first grant was released, and no key may stay behind but
// the revocation marker of the lost acquire's token, which expires.
func TestRetriedLostReplyLeavesNoStrayLock(t *testing.T) {
	// Log every command with its arguments, to see which acquires ran.
	srv := redistest.Start(t, redistest.WithArgs("--slowlog-log-slower-than", "0", "--slowlog-max-len", "10000"))
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
	require.NoError(t, direct.SlowLogReset(t.Context()).Err())

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
	keys := lockKeysLeft(t, direct, cfg.Prefix)
	require.Len(t, keys, 1)
	tokens := acquireTokens(t, direct, keys[0], cfg.TTL)
	t.Logf("acquires run, in order: %v; granted: %s", tokens, res.lease.Token())
	require.GreaterOrEqual(t, len(tokens), 2, "acquires run: %v", tokens)
	assert.NotEqual(t, res.lease.Token(), tokens[0], "the lost acquire ran first, and was granted")
	assert.Equal(t, res.lease.Token(), tokens[len(tokens)-1])
	require.NoError(t, res.lease.Unlock(t.Context()))
	assert.Empty(t, lockKeysLeft(t, direct, cfg.Prefix))
}

// acquireTokens returns, in the order Redis ran them, the owner tokens of
// the acquire scripts run on key, from the slow log. An acquire is a script
// call whose first key is key, with the arguments token (without ':') and
// TTL after the keys.
func acquireTokens(t *testing.T, c *redis.Client, key string, ttl time.Duration) []string {
	t.Helper()
	logs, err := c.SlowLogGet(t.Context(), -1).Result()
	require.NoError(t, err)
	var tokens []string
	for i := len(logs) - 1; i >= 0; i-- { // oldest first
		a := logs[i].Args
		if len(a) < 4 || (!strings.EqualFold(a[0], "evalsha") && !strings.EqualFold(a[0], "eval")) {
			continue
		}
		nkeys, err := strconv.Atoi(a[2])
		if err != nil || len(a) < 3+nkeys+2 || a[3] != key {
			continue
		}
		token, arg := a[3+nkeys], a[4+nkeys]
		if !strings.Contains(token, ":") && arg == strconv.FormatInt(ttl.Milliseconds(), 10) {
			if len(tokens) == 0 || tokens[len(tokens)-1] != token {
				tokens = append(tokens, token)
			}
		}
	}
	return tokens
}
