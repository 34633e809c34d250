package mutex_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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

// aclClientCommands are the commands a Mutex sends itself: its scripts
// (EVALSHA, and EVAL when Redis has not cached them), Check (EXISTS), the
// pub/sub connection (SUBSCRIBE, UNSUBSCRIBE, and PING when it is idle) and
// Verify (INFO).
var aclClientCommands = []string{"evalsha", "eval", "exists", "subscribe", "unsubscribe", "ping", "info"}

// aclScriptCommands are the commands the scripts call, which Redis checks
// against the ACL of the user running the script.
var aclScriptCommands = []string{
	"get", "set", "del", "exists", "pexpire", "pttl", "time", "publish",
	"zadd", "zrem", "zrange", "zrangebyscore", "zscore", "zmscore",
}

// aclCommands are the commands of the rule, each once.
func aclCommands() []string {
	var cmds []string
	for _, c := range slices.Concat(aclClientCommands, aclScriptCommands) {
		if !slices.Contains(cmds, c) {
			cmds = append(cmds, c)
		}
	}
	return cmds
}

// aclRule returns the rules of ACL SETUSER that let a user run Mutexes with
// prefix (or a prefix that starts with prefix + ":") and nothing else.
func aclRule(prefix, password string) []string {
	rule := []string{
		"on", ">" + password,
		"resetkeys", "~" + prefix + ":*",
		"resetchannels", "&" + prefix + ":*",
		"-@all",
	}
	for _, c := range aclCommands() {
		rule = append(rule, "+"+c)
	}
	return rule
}

// aclSetUser is the ACL SETUSER command line for user with aclRule.
func aclSetUser(user, prefix, password string) string {
	return "ACL SETUSER " + user + " " + strings.Join(aclRule(prefix, password), " ")
}

// aclNotCounted are commands that may show in INFO commandstats during
// the test without being in the rule: HELLO, which Redis runs for any
// user; go-redis's CLIENT SETINFO on connect, whose refusal it ignores;
// and the commands of the admin client.
var aclNotCounted = []string{
	"hello", "client|setinfo",
	"config|resetstat", "script|flush", "zcard", "pubsub|numsub", "acl|log",
}

// scriptCommand matches a command that a script calls by name.
var scriptCommand = regexp.MustCompile(`(?:redis\.p?call|batched)\(\s*'([A-Za-z]+)'`)

// aclScriptCommands are exactly the commands the scripts call.
func TestACLRuleCoversScripts(t *testing.T) {
	files, err := filepath.Glob("scripts/*.lua")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	called := map[string]bool{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range scriptCommand.FindAllStringSubmatch(string(src), -1) {
			called[strings.ToLower(m[1])] = true
		}
		// The only call by a command held in a variable is lib.lua's
		// batched, whose callers name their commands.
		dynamic := strings.Count(string(src), "redis.call(cmd,")
		all := strings.Count(string(src), "redis.call(") + strings.Count(string(src), "redis.pcall(")
		literal := len(regexp.MustCompile(`redis\.p?call\(\s*'`).FindAllString(string(src), -1))
		assert.Equal(t, all, literal+dynamic, "%s calls a command that is not named", f)
	}
	// SPUBLISH runs on a Redis Cluster only (see the README).
	assert.Equal(t, slices.Sorted(slices.Values(append(slices.Clone(aclScriptCommands), "spublish"))), slices.Sorted(maps.Keys(called)))
}

// The README gives the rule for prefix jobs.
func TestACLRuleInREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	line := aclSetUser("distlock", "jobs", "CHANGE-ME")
	assert.True(t, strings.Contains(string(readme), "\n"+line+"\n"), "README.md lacks the line\n%s", line)
}

// A user restricted by aclRule can use every operation of a Mutex, in both
// modes, and the rule holds no command that the operations do not use; a
// Mutex with another prefix on the same client gets NOPERM errors.
func TestACLMinimalRule(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := t.Context()
	p := prefix(t)
	const user, password = "distlock", "acl-test-password"
	require.NoError(t, admin.ACLSetUser(ctx, user, aclRule(p, password)...).Err())
	require.NoError(t, admin.ACLLogReset(ctx).Err())
	require.NoError(t, redistest.ResetStats(ctx, admin))

	restricted := func(t *testing.T) *redis.Client {
		return srv.Client(t, func(o *redis.Options) {
			o.Username, o.Password = user, password
			o.ContextTimeoutEnabled = true
		})
	}
	newRestricted := func(t *testing.T, cfg mutex.Config) *mutex.Mutex {
		return newMutexOn(t, restricted(t), cfg)
	}
	// waitListening waits until someone listens on channel.
	waitListening := func(t *testing.T, channel string) {
		t.Helper()
		require.Eventually(t, func() bool {
			n, err := admin.PubSubNumSub(ctx, channel).Result()
			return err == nil && n[channel] > 0
		}, 10*time.Second, time.Millisecond, "nobody listens on %s", channel)
	}
	// woken checks that a waiter is granted soon after a release, long
	// before the holder's TTL would have run out.
	woken := func(t *testing.T, got <-chan grant, released time.Time) mutex.Lease {
		t.Helper()
		g, ok := receiveWithin(got, 5*time.Second)
		require.True(t, ok, "waiter not woken after the release")
		require.NoError(t, g.err)
		assert.Less(t, g.at.Sub(released), 2*time.Second)
		return g.lease
	}

	t.Run("plain", func(t *testing.T) {
		cfg := mutex.Config{Prefix: p, TTL: 30 * time.Second}
		a, b := newRestricted(t, cfg), newRestricted(t, cfg)

		la := must[mutex.Lease](t)(a.TryLock(ctx, "k1"))
		assert.Equal(t, mutex.Locked, must[mutex.Status](t)(b.Check(ctx, "k1")))
		assert.Equal(t, mutex.PartiallyLocked, must[mutex.Status](t)(b.Check(ctx, "k1", "k2")))
		_, err := b.TryLock(ctx, "k1", "k2")
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.NoError(t, la.Extend(ctx))

		got := lockAsync(ctx, b, "k1", "k2")
		waitListening(t, lockKey(p, "k1"))
		released := time.Now()
		require.NoError(t, la.Unlock(ctx))
		lb := woken(t, got, released)
		assert.Equal(t, []string{"k1", "k2"}, lb.Keys())
		assert.Greater(t, lb.Fence(), la.Fence())
		require.NoError(t, lb.Extend(ctx))
		require.ErrorIs(t, la.Extend(ctx), mutex.ErrReleased)
		require.NoError(t, lb.Unlock(ctx))
		assert.Equal(t, mutex.Available, must[mutex.Status](t)(a.Check(ctx, "k1", "k2")))
	})

	t.Run("fifo", func(t *testing.T) {
		cfg := mutex.Config{Prefix: p, TTL: 30 * time.Second, FIFO: true}
		a, b, c := newRestricted(t, cfg), newRestricted(t, cfg), newRestricted(t, cfg)

		la := must[mutex.Lease](t)(a.Lock(ctx, "f1", "f2"))
		assert.Equal(t, mutex.Locked, must[mutex.Status](t)(b.Check(ctx, "f1", "f2")))
		_, err := b.TryLock(ctx, "f1")
		require.ErrorIs(t, err, mutex.ErrNotObtained)

		got := lockAsync(ctx, b, "f1", "f2")
		waitQueueLen(t, admin, p, "f1", 1)
		// A waiter that gives up leaves the queue.
		cctx, cancel := context.WithCancel(ctx)
		left := lockAsync(cctx, c, "f1")
		waitQueueLen(t, admin, p, "f1", 2)
		cancel()
		g, ok := receiveWithin(left, 5*time.Second)
		require.True(t, ok)
		require.ErrorIs(t, g.err, context.Canceled)
		waitQueueLen(t, admin, p, "f1", 1)
		// The waiters' queue entries are renewed meanwhile.
		time.Sleep(mutex.FIFOLiveness)
		require.NoError(t, la.Extend(ctx))

		released := time.Now()
		require.NoError(t, la.Unlock(ctx))
		lb := woken(t, got, released)
		assert.Greater(t, lb.Fence(), la.Fence())
		require.NoError(t, lb.Extend(ctx))
		require.NoError(t, lb.Unlock(ctx))
		lc := must[mutex.Lease](t)(c.TryLock(ctx, "f1"))
		require.NoError(t, lc.Unlock(ctx))
		assert.Equal(t, mutex.Available, must[mutex.Status](t)(a.Check(ctx, "f1", "f2")))

		// Waiters for several keys are woken to claim them, and wait on
		// while another is ahead of them in a queue.
		d := newRestricted(t, cfg)
		la = must[mutex.Lease](t)(a.Lock(ctx, "x", "y"))
		ld := must[mutex.Lease](t)(d.Lock(ctx, "w"))
		gotB := lockAsync(ctx, b, "x", "w")
		waitQueueLen(t, admin, p, "x", 1)
		gotC := lockAsync(ctx, c, "x", "y")
		waitQueueLen(t, admin, p, "x", 2)
		require.NoError(t, la.Unlock(ctx))
		_, ok = receiveWithin(gotC, 200*time.Millisecond)
		require.False(t, ok, "a waiter passed the one ahead of it")
		released = time.Now()
		require.NoError(t, ld.Unlock(ctx))
		lb = woken(t, gotB, released)
		released = time.Now()
		require.NoError(t, lb.Unlock(ctx))
		require.NoError(t, woken(t, gotC, released).Unlock(ctx))
	})

	t.Run("WithLock and AutoExtend", func(t *testing.T) {
		m := newRestricted(t, mutex.Config{Prefix: p, TTL: 300 * time.Millisecond})
		other := newRestricted(t, mutex.Config{Prefix: p, TTL: 300 * time.Millisecond})
		run := func(ctx context.Context) error {
			for range 4 {
				time.Sleep(200 * time.Millisecond)
				if err := ctx.Err(); err != nil {
					return context.Cause(ctx)
				}
				if s, err := other.Check(ctx, "w1", "w2"); err != nil || s != mutex.Locked {
					return errors.Join(err, errors.New("lost the keys: "+s.String()))
				}
			}
			return nil
		}
		require.NoError(t, mutex.WithLockMany(ctx, m, []string{"w1", "w2"}, run))

		locker := middleware.Chain(m, middleware.AutoExtend())
		lease := must[mutex.Lease](t)(locker.Lock(ctx, "w1", "w2"))
		require.NoError(t, mutex.RunLocked(ctx, locker, lease, run))
		assert.Equal(t, mutex.Available, must[mutex.Status](t)(other.Check(ctx, "w1", "w2")))
	})

	t.Run("scripts loaded again after SCRIPT FLUSH", func(t *testing.T) {
		plain := newRestricted(t, mutex.Config{Prefix: p, TTL: 30 * time.Second})
		cfg := mutex.Config{Prefix: p, TTL: 30 * time.Second, FIFO: true}
		a, b := newRestricted(t, cfg), newRestricted(t, cfg)

		la := must[mutex.Lease](t)(a.Lock(ctx, "s"))
		got := lockAsync(ctx, b, "s")
		waitQueueLen(t, admin, p, "s", 1)
		require.NoError(t, admin.ScriptFlush(ctx).Err())
		time.Sleep(mutex.FIFOLiveness) // the waiter's renewals meet the empty cache
		require.NoError(t, la.Extend(ctx))
		released := time.Now()
		require.NoError(t, la.Unlock(ctx))
		require.NoError(t, woken(t, got, released).Unlock(ctx))

		require.NoError(t, admin.ScriptFlush(ctx).Err())
		l := must[mutex.Lease](t)(plain.Lock(ctx, "s2"))
		require.NoError(t, admin.ScriptFlush(ctx).Err())
		require.NoError(t, l.Extend(ctx))
		require.NoError(t, admin.ScriptFlush(ctx).Err())
		require.NoError(t, l.Unlock(ctx))
	})

	t.Run("idle pub/sub connection", func(t *testing.T) {
		cfg := mutex.Config{Prefix: p, TTL: 30 * time.Second}
		a, b := newRestricted(t, cfg), newRestricted(t, cfg)
		la := must[mutex.Lease](t)(a.Lock(ctx, "idle"))
		got := lockAsync(ctx, b, "idle")
		waitListening(t, lockKey(p, "idle"))
		// Longer than the subscriber waits before it PINGs.
		time.Sleep(6 * time.Second)
		released := time.Now()
		require.NoError(t, la.Unlock(ctx))
		require.NoError(t, woken(t, got, released).Unlock(ctx))
	})

	t.Run("Verify", func(t *testing.T) {
		m := newRestricted(t, mutex.Config{Prefix: p})
		require.NoError(t, m.Verify(ctx))
	})

	t.Run("nothing refused and every command used", func(t *testing.T) {
		log, err := admin.ACLLog(ctx, 100).Result()
		require.NoError(t, err)
		for _, e := range log {
			if e.Object == "client|setinfo" {
				continue // go-redis's identity on Redis 7.2 and later
			}
			t.Errorf("ACL LOG: %s %s %q by %s (%d times)", e.Reason, e.Context, e.Object, e.Username, e.Count)
		}
		stats, err := redistest.CommandStats(ctx, admin)
		require.NoError(t, err)
		rule := aclCommands()
		for _, c := range rule {
			assert.Positive(t, stats[c], "%s is in the rule but was never called", c)
		}
		for c, n := range stats {
			if n > 0 && !slices.Contains(rule, c) && !slices.Contains(aclNotCounted, c) {
				t.Errorf("%s was called %d times, and is not in the rule", c, n)
			}
		}
	})

	t.Run("other prefixes refused", func(t *testing.T) {
		err := restricted(t).Set(ctx, "plain-key", "v", 0).Err()
		require.Error(t, err, "SET outside scripts")
		assert.Contains(t, err.Error(), "NOPERM")
		for _, other := range []string{"other", p + "x"} {
			for _, fifo := range []bool{false, true} {
				m := newRestricted(t, mutex.Config{Prefix: other, TTL: 30 * time.Second, FIFO: fifo})
				refused := func(what string, err error) {
					t.Helper()
					require.Error(t, err, "%s with prefix %q (FIFO %v)", what, other, fifo)
					assert.Contains(t, err.Error(), "NOPERM", "%s with prefix %q (FIFO %v)", what, other, fifo)
				}
				_, err := m.TryLock(ctx, "k")
				refused("TryLock", err)
				lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				start := time.Now()
				_, err = m.Lock(lctx, "k")
				cancel()
				refused("Lock", err)
				assert.Less(t, time.Since(start), 5*time.Second, "Lock waited before it failed")
				_, err = m.Check(ctx, "k")
				refused("Check", err)
			}
		}
		log, err := admin.ACLLog(ctx, 100).Result()
		require.NoError(t, err)
		assert.NotEmpty(t, log)
	})
}
