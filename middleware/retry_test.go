package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// fast are retry options with short delays for tests.
var fast = []middleware.RetryOption{
	middleware.WithMinDelay(time.Millisecond),
	middleware.WithMaxDelay(5 * time.Millisecond),
}

func retryOpts(opts ...middleware.RetryOption) []middleware.RetryOption {
	return append(append([]middleware.RetryOption(nil), fast...), opts...)
}

// redisReply returns the error reply msg from the real server.
func redisReply(t *testing.T, c *redis.Client, msg string) error {
	t.Helper()
	err := c.Eval(t.Context(), "return redis.error_reply(ARGV[1])", nil, msg).Err()
	var rerr redis.Error
	require.ErrorAs(t, err, &rerr)
	return err
}

func TestIsTransient(t *testing.T) {
	c := redistest.Shared(t).Client(t)
	refused := func() error {
		// Dial a port that nothing listens on.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		_, err = net.Dial("tcp", addr)
		require.Error(t, err)
		return err
	}()
	wrap := func(err error) error { return fmt.Errorf("acquire: %w", err) }
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{refused, true},
		{wrap(refused), true},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{wrap(io.EOF), true},
		{redis.ErrPoolTimeout, true},
		{redis.ErrPoolExhausted, true},
		{wrap(redis.ErrPoolExhausted), true},
		{wrap(redisReply(t, c, "LOADING Redis is loading the dataset in memory")), true},
		{wrap(redisReply(t, c, "TRYAGAIN Multiple keys request during rehashing of slot")), true},
		{wrap(redisReply(t, c, "CLUSTERDOWN The cluster is down")), true},
		{wrap(redisReply(t, c, "READONLY You can't write against a read only replica.")), true},
		{wrap(redisReply(t, c, "MASTERDOWN Link with MASTER is down")), true},
		{wrap(redisReply(t, c, "ERR unknown command")), false},
		{wrap(redisReply(t, c, "LOADINGX not a known reply")), false},
		{redis.ErrClosed, false},
		{context.Canceled, false},
		{wrap(context.DeadlineExceeded), false},
		{&mutex.NotObtainedError{Key: "k"}, false},
		{wrap(mutex.ErrInvalid), false},
		{wrap(mutex.ErrNotHeld), false},
		{wrap(mutex.ErrReleased), false},
		{wrap(mutex.ErrReentrant), false},
		{mutex.ErrClosed, false},
		{errors.Join(refused, context.Canceled), false},
		{errors.New("something else"), false},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, middleware.IsTransient(tc.err), "IsTransient(%v)", tc.err)
	}
}

// TestRetryPoolExhausted runs out of connections for real: a client
// limited to one connection, held elsewhere, fails the first TryLock with
// redis.ErrPoolExhausted. IsTransient calls that transient, so Retry tries
// again and succeeds once the connection is back.
func TestRetryPoolExhausted(t *testing.T) {
	for _, cc := range redistest.FaultConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			c := redistest.Shared(t).Client(t, cc.Mod, func(o *redis.Options) { o.MaxActiveConns = 1 })
			m := newMutex(t, c, mutex.Config{Prefix: prefix(t)})
			held := c.Conn()
			require.NoError(t, held.Ping(t.Context()).Err())
			_, err := m.TryLock(t.Context(), "k")
			require.ErrorIs(t, err, redis.ErrPoolExhausted)
			assert.True(t, middleware.IsTransient(err), "IsTransient(%v)", err)

			rec, mw := record(nil)
			rec.after = func(n int) {
				if n == 1 {
					require.NoError(t, held.Close())
				}
			}
			l := middleware.Chain(m, middleware.Retry(fast...), mw)
			lease, err := l.TryLock(t.Context(), "k")
			require.NoError(t, err)
			assert.GreaterOrEqual(t, rec.count(), 2, "retried until a connection was free")
			require.NoError(t, lease.Unlock(t.Context()))
		})
	}
}

func TestRetryBadOptions(t *testing.T) {
	bad := [][]middleware.RetryOption{
		{middleware.WithAttempts(0)},
		{middleware.WithFactor(0.5)},
		{middleware.WithMinDelay(0)},
		{middleware.WithMaxDelay(-time.Second)},
		{middleware.WithMinDelay(time.Second), middleware.WithMaxDelay(time.Millisecond)},
		{middleware.WithRetryIf(nil)},
		{nil},
	}
	m := newMutex(t, redistest.Shared(t).Client(t), mutex.Config{Prefix: prefix(t)})
	for _, opts := range bad {
		rec, mw := record(nil)
		l := middleware.Chain(m, middleware.Retry(opts...), mw)
		_, err := l.Lock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrInvalid)
		_, err = l.TryLock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrInvalid)
		_, err = l.Check(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrInvalid)
		assert.Zero(t, rec.count(), "no call may pass a misconfigured Retry")
	}
	_, err := middleware.Retry()(nil).Lock(t.Context(), "k")
	require.ErrorIs(t, err, mutex.ErrInvalid)
	_, err = middleware.Chain(m, nil).Lock(t.Context(), "k")
	require.ErrorIs(t, err, mutex.ErrInvalid)
}

func TestRetryTransientFailures(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := newMutex(t, backend.Client(t), mutex.Config{Prefix: prefix(t)})
		reset := fmt.Errorf("acquire: %w", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET})

		// Two failures, then success: three calls.
		rec, mw := record(func(n int) error {
			if n <= 2 {
				return reset
			}
			return nil
		})
		l := middleware.Chain(m, middleware.Retry(retryOpts()...), mw)
		lease, err := l.TryLock(t.Context(), "k")
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(t.Context()))
		assert.Equal(t, []string{"TryLock", "TryLock", "TryLock"}, rec.calls)

		// Always failing: stops after the attempts, with the last error.
		for _, op := range []func(mutex.Locker) error{
			func(l mutex.Locker) error { _, err := l.Lock(t.Context(), "k"); return err },
			func(l mutex.Locker) error { _, err := l.TryLock(t.Context(), "k"); return err },
			func(l mutex.Locker) error { _, err := l.Check(t.Context(), "k"); return err },
		} {
			rec, mw := record(func(int) error { return reset })
			err := op(middleware.Chain(m, middleware.Retry(retryOpts(middleware.WithAttempts(4))...), mw))
			require.ErrorIs(t, err, syscall.ECONNRESET)
			assert.Equal(t, 4, rec.count())
		}
	})
}

func TestRetryNeverRetriesFinalErrors(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := newMutex(t, backend.Client(t), mutex.Config{Prefix: prefix(t)})
		cancelled, cancel := context.WithCancel(t.Context())
		cancel()
		for _, final := range []error{
			&mutex.NotObtainedError{Key: "k"},
			&mutex.NotObtainedError{Cause: context.DeadlineExceeded},
			fmt.Errorf("acquire: %w", mutex.ErrInvalid),
			fmt.Errorf("acquire: %w", mutex.ErrReentrant),
			fmt.Errorf("acquire: %w", mutex.ErrNotHeld),
			mutex.ErrClosed,
			context.Canceled,
			redis.ErrClosed,
		} {
			rec, mw := record(func(int) error { return final })
			// Even a predicate that retries everything does not retry these.
			l := middleware.Chain(m, middleware.Retry(retryOpts(middleware.WithRetryIf(func(error) bool { return true }))...), mw)
			_, err := l.TryLock(t.Context(), "k")
			require.ErrorIs(t, err, final)
			assert.Equal(t, 1, rec.count(), "%v", final)
		}
		// A cancelled context is not retried either.
		rec, mw := record(nil)
		l := middleware.Chain(m, middleware.Retry(retryOpts()...), mw)
		_, err := l.Lock(cancelled, "k")
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		assert.Equal(t, 1, rec.count())
	})
}

func TestRetryIfDecides(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := newMutex(t, backend.Client(t), mutex.Config{Prefix: prefix(t)})
		custom := errors.New("custom failure")
		rec, mw := record(func(n int) error {
			if n == 1 {
				return custom
			}
			return nil
		})
		l := middleware.Chain(m, middleware.Retry(retryOpts(middleware.WithRetryIf(func(err error) bool {
			return errors.Is(err, custom)
		}))...), mw)
		st, err := l.Check(t.Context(), "k")
		require.NoError(t, err)
		assert.Equal(t, mutex.Available, st)
		assert.Equal(t, 2, rec.count())

		// Without it, an unknown error is not retried.
		rec, mw = record(func(int) error { return custom })
		_, err = middleware.Chain(m, middleware.Retry(retryOpts()...), mw).Check(t.Context(), "k")
		require.ErrorIs(t, err, custom)
		assert.Equal(t, 1, rec.count())
	})
}

func TestRetryOnContention(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute}
		holder := newMutex(t, backend.Client(t), cfg)
		m := newMutex(t, backend.Client(t), cfg)
		held, err := holder.TryLock(t.Context(), "k")
		require.NoError(t, err)

		// Off by default: one attempt.
		rec, mw := record(nil)
		_, err = middleware.Chain(m, middleware.Retry(retryOpts()...), mw).TryLock(t.Context(), "k")
		var blocked *mutex.NotObtainedError
		require.ErrorAs(t, err, &blocked)
		assert.Equal(t, "k", blocked.Key)
		assert.Equal(t, 1, rec.count())

		// On: polls until the attempts run out.
		rec, mw = record(nil)
		poll := middleware.Chain(m, middleware.Retry(retryOpts(
			middleware.WithRetryOnContention(true), middleware.WithAttempts(3))...), mw)
		_, err = poll.TryLock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		assert.Equal(t, 3, rec.count())

		// And succeeds once the holder lets go.
		rec, mw = record(func(n int) error {
			if n == 2 {
				require.NoError(t, held.Unlock(context.Background()))
			}
			return nil
		})
		poll = middleware.Chain(m, middleware.Retry(retryOpts(
			middleware.WithRetryOnContention(true), middleware.WithAttempts(100))...), mw)
		lease, err := poll.TryLock(t.Context(), "k")
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(t.Context()))
		assert.Equal(t, 2, rec.count())
	})
}

func TestRetryStopsWithContext(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Minute}
		m := newMutex(t, backend.Client(t), cfg)
		reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
		slow := []middleware.RetryOption{
			middleware.WithMinDelay(time.Hour), middleware.WithMaxDelay(time.Hour), middleware.WithAttempts(10),
		}

		ctx, cancel := context.WithCancel(t.Context())
		rec, mw := record(func(int) error {
			cancel() // the context ends during the delay after this attempt
			return reset
		})
		_, err := middleware.Chain(m, middleware.Retry(slow...), mw).TryLock(ctx, "k")
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, syscall.ECONNRESET)
		assert.Equal(t, 1, rec.count())

		// Polling on contention ends like a Lock whose context ends.
		holder := newMutex(t, backend.Client(t), cfg)
		held, err := holder.TryLock(t.Context(), "k")
		require.NoError(t, err)
		t.Cleanup(func() { held.Unlock(context.Background()) })
		ctx, cancel = context.WithCancel(t.Context())
		rec, mw = record(nil)
		rec.after = func(n int) {
			if n == 2 {
				cancel() // during the delay after the second attempt
			}
		}
		_, err = middleware.Chain(m, middleware.Retry(retryOpts(middleware.WithRetryOnContention(true), middleware.WithAttempts(10))...), mw).TryLock(ctx, "k")
		var blocked *mutex.NotObtainedError
		require.ErrorAs(t, err, &blocked)
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, "k", blocked.Key)
		assert.Equal(t, 2, rec.count())
	})
}

// TestRetryRecoversFromRestart stops Redis, starts a retried Lock, and
// restarts Redis once the Lock has failed at least once: the Lock gets the
// key without the caller seeing the outage.
func TestRetryRecoversFromRestart(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t, func(o *redis.Options) { o.MaxRetries = -1 })
	m := newMutex(t, c, mutex.Config{Prefix: prefix(t)})
	// Warm up the connection pool and the script cache.
	lease, err := m.TryLock(t.Context(), "k")
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(t.Context()))

	srv.Stop(t)
	failed := make(chan error, 1)
	l := middleware.Retry(
		middleware.WithAttempts(1000),
		middleware.WithMinDelay(5*time.Millisecond),
		middleware.WithMaxDelay(50*time.Millisecond),
		middleware.WithRetryIf(func(err error) bool {
			select {
			case failed <- err:
			default:
			}
			return middleware.IsTransient(err)
		}),
	)(m)
	type result struct {
		lease mutex.Lease
		err   error
	}
	done := make(chan result, 1)
	go func() {
		lease, err := l.Lock(t.Context(), "k")
		done <- result{lease, err}
	}()
	firstErr := <-failed
	assert.True(t, middleware.IsTransient(firstErr), "the outage is transient: %v", firstErr)
	srv.Restart(t)
	res := <-done
	require.NoError(t, res.err)
	require.NoError(t, res.lease.Unlock(t.Context()))
	assert.Empty(t, lockKeysLeft(t, srv.Client(t), prefix(t)))
}

func TestRetryBackoffGrows(t *testing.T) {
	m := newMutex(t, redistest.Shared(t).Client(t), mutex.Config{Prefix: prefix(t)})
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	var calls []time.Time
	_, mw := record(func(int) error {
		calls = append(calls, time.Now())
		return reset
	})
	l := middleware.Chain(m, middleware.Retry(
		middleware.WithAttempts(5),
		middleware.WithMinDelay(20*time.Millisecond),
		middleware.WithMaxDelay(80*time.Millisecond),
		middleware.WithFactor(2),
		middleware.WithJitter(false),
	), mw)
	_, err := l.Check(t.Context(), "k")
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.Len(t, calls, 5)
	// Without jitter the delays are 20, 40, 80 and (capped) 80ms.
	for i, want := range []time.Duration{20, 40, 80, 80} {
		assert.GreaterOrEqual(t, calls[i+1].Sub(calls[i]), want*time.Millisecond, "delay %d", i+1)
	}
}

// TestRetryErrorText checks that only the sentinel carries the package
// prefix: bad input reads "mutex: invalid argument: <detail>", and giving up
// adds only what Retry did.
func TestRetryErrorText(t *testing.T) {
	m := newMutex(t, redistest.Shared(t).Client(t), mutex.Config{Prefix: prefix(t)})
	for _, tc := range []struct {
		opts []middleware.RetryOption
		want string
	}{
		{[]middleware.RetryOption{middleware.WithAttempts(0)},
			"mutex: invalid argument: retry attempts 0, want at least 1"},
		{[]middleware.RetryOption{middleware.WithMinDelay(time.Second), middleware.WithMaxDelay(time.Millisecond)},
			"mutex: invalid argument: retry max delay 1ms below min delay 1s"},
		{[]middleware.RetryOption{middleware.WithRetryIf(nil)},
			"mutex: invalid argument: nil predicate for retry"},
		{[]middleware.RetryOption{nil},
			"mutex: invalid argument: nil option for retry"},
	} {
		_, err := middleware.Retry(tc.opts...)(m).Check(t.Context(), "k")
		require.EqualError(t, err, tc.want)
	}
	_, err := middleware.Retry()(nil).Lock(t.Context(), "k")
	require.EqualError(t, err, "mutex: invalid argument: nil Locker for retry")

	refused := fmt.Errorf("acquire: %w", syscall.ECONNREFUSED)
	_, mw := record(func(int) error { return refused })
	_, err = middleware.Chain(m, middleware.Retry(retryOpts(middleware.WithAttempts(2))...), mw).TryLock(t.Context(), "k")
	require.EqualError(t, err, "retry: gave up after 2 attempts: acquire: "+syscall.ECONNREFUSED.Error())
}
