package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

// deadlineOf returns the validity deadline of the Mutex lease behind l.
func deadlineOf(t *testing.T, l mutex.Lease) time.Time {
	t.Helper()
	d, ok := mutex.Deadline(l)
	require.True(t, ok, "%T has no deadline", l)
	return d
}

// waitRenewals waits until s has made at least n renewals.
func waitRenewals(t *testing.T, s *middleware.Scheduler, n uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return s.Stats().Renewals >= n },
		30*time.Second, time.Millisecond, "renewals: %+v", s.Stats())
}

func TestAutoExtendKeepsLease(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Second}
		m := newMutex(t, backend.Client(t), cfg)
		other := newMutex(t, backend.Client(t), cfg)
		s := newScheduler(t, middleware.SchedulerConfig{})
		l := middleware.AutoExtend(middleware.WithScheduler(s))(m)

		lease, err := l.Lock(t.Context(), "k")
		require.NoError(t, err)
		first := deadlineOf(t, lease)
		assert.True(t, lease.(mutex.AutoExtender).AutoExtended())
		assert.Equal(t, 1, s.Stats().Leases)

		// Six renewals at a third of the validity each span twice the TTL.
		waitRenewals(t, s, 6)
		require.NoError(t, lease.Err())
		assert.True(t, time.Now().After(first), "the first validity has run out")
		_, err = other.TryLock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrNotObtained, "the key is still held")

		require.NoError(t, lease.Unlock(t.Context()))
		assert.Equal(t, 0, s.Stats().Leases)
		renewals := s.Stats().Renewals
		assert.Empty(t, keysLeft(t, backend.Client(t), cfg.Prefix))
		require.ErrorIs(t, lease.Unlock(t.Context()), mutex.ErrReleased)
		// Past the next due time, at most a renewal that was in flight at the
		// Unlock has been counted.
		time.Sleep(cfg.TTL / 2)
		assert.LessOrEqual(t, s.Stats().Renewals, renewals+1, "no renewal after Unlock")
		assert.Empty(t, keysLeft(t, backend.Client(t), cfg.Prefix))
	})
}

func TestAutoExtendTiming(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		ttl := 2 * time.Second
		m := newMutex(t, backend.Client(t), mutex.Config{Prefix: prefix(t), TTL: ttl})
		const slack = 20 * time.Millisecond // batching window and clock reading

		for _, tc := range []struct {
			name string
			opts []middleware.AutoExtendOption
			// earliest is the soonest a first renewal may come after the grant,
			// given the validity v of the lease.
			earliest func(v time.Duration) time.Duration
		}{
			{"default", nil, func(v time.Duration) time.Duration { return v / 3 }},
			{"threshold", []middleware.AutoExtendOption{middleware.WithThreshold(time.Second)},
				func(v time.Duration) time.Duration { return v - time.Second }},
			{"interval", []middleware.AutoExtendOption{middleware.WithInterval(200 * time.Millisecond)},
				func(time.Duration) time.Duration { return 200 * time.Millisecond }},
			{"interval before threshold", []middleware.AutoExtendOption{
				middleware.WithInterval(200 * time.Millisecond), middleware.WithThreshold(100 * time.Millisecond)},
				func(time.Duration) time.Duration { return 200 * time.Millisecond }},
			{"threshold past the validity is bounded", []middleware.AutoExtendOption{middleware.WithThreshold(time.Hour)},
				func(v time.Duration) time.Duration { return v / 10 }},
			{"tiny interval is bounded", []middleware.AutoExtendOption{middleware.WithInterval(time.Microsecond)},
				func(v time.Duration) time.Duration { return v / 10 }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := newScheduler(t, middleware.SchedulerConfig{})
				l := middleware.AutoExtend(append(tc.opts, middleware.WithScheduler(s))...)(m)
				lease, err := l.TryLock(t.Context(), tc.name)
				require.NoError(t, err)
				granted := time.Now()
				v := time.Until(deadlineOf(t, lease))
				waitRenewals(t, s, 1)
				assert.GreaterOrEqual(t, time.Since(granted), tc.earliest(v)-slack)
				require.NoError(t, lease.Err())
				require.NoError(t, lease.Unlock(t.Context()))
			})
		}
	})
}

func TestAutoExtendBadOptions(t *testing.T) {
	m := newMutex(t, redistest.Shared(t).Client(t), mutex.Config{Prefix: prefix(t)})
	for _, opts := range [][]middleware.AutoExtendOption{
		{middleware.WithInterval(0)},
		{middleware.WithThreshold(-time.Second)},
		{middleware.WithScheduler(nil)},
		{nil},
	} {
		rec, mw := record(nil)
		l := middleware.Chain(m, middleware.AutoExtend(opts...), mw)
		_, err := l.Lock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrInvalid)
		_, err = l.TryLock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrInvalid)
		assert.Zero(t, rec.count())
	}
	_, err := middleware.AutoExtend()(nil).TryLock(t.Context(), "k")
	require.ErrorIs(t, err, mutex.ErrInvalid)
	_, err = middleware.NewScheduler(middleware.SchedulerConfig{Workers: -1})
	require.ErrorIs(t, err, mutex.ErrInvalid)
}

func TestAutoExtendClosedScheduler(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 500 * time.Millisecond}
		m := newMutex(t, backend.Client(t), cfg)
		s := newScheduler(t, middleware.SchedulerConfig{})
		l := middleware.AutoExtend(middleware.WithScheduler(s))(m)
		lease, err := l.TryLock(t.Context(), "a")
		require.NoError(t, err)

		require.NoError(t, s.Close())
		// The lease is no longer renewed: it ends at its deadline.
		<-lease.Done()
		require.ErrorIs(t, lease.Err(), mutex.ErrNotHeld)
		require.ErrorIs(t, lease.Unlock(t.Context()), mutex.ErrNotHeld)

		_, err = l.TryLock(t.Context(), "b")
		require.ErrorIs(t, err, mutex.ErrClosed)
		assert.Empty(t, keysLeft(t, backend.Client(t), cfg.Prefix), "nothing was locked")
		require.NoError(t, s.Close())
	})
}

func TestAutoExtendLossEndsLeaseAtOnce(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: 10 * time.Second}
		m := newMutex(t, backend.Client(t), cfg)
		s := newScheduler(t, middleware.SchedulerConfig{})
		l := middleware.AutoExtend(middleware.WithScheduler(s), middleware.WithInterval(time.Millisecond))(m)
		lease, err := l.TryLock(t.Context(), "k")
		require.NoError(t, err)
		deadline := deadlineOf(t, lease)

		// Another owner takes the key behind the lease's back.
		direct := backend.Client(t)
		keys := keysLeft(t, direct, cfg.Prefix)
		require.Len(t, keys, 1)
		require.NoError(t, direct.Set(t.Context(), keys[0], "intruder:1", time.Minute).Err())

		<-lease.Done()
		require.ErrorIs(t, lease.Err(), mutex.ErrNotHeld)
		assert.True(t, time.Now().Before(deadline.Add(-5*time.Second)),
			"the loss was found by the next renewal, not by the expiry")
		require.Eventually(t, func() bool { return s.Stats().Leases == 0 }, 10*time.Second, time.Millisecond)
		require.ErrorIs(t, lease.Unlock(t.Context()), mutex.ErrNotHeld)
		v, err := direct.Get(t.Context(), keys[0]).Result()
		require.NoError(t, err)
		assert.Equal(t, "intruder:1", v, "the new owner's key is left alone")
		require.NoError(t, direct.Del(t.Context(), keys[0]).Err())
	})
}

func TestAutoExtendTwiceRenewsOnce(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := newMutex(t, backend.Client(t), mutex.Config{Prefix: prefix(t)})
		innerSched := newScheduler(t, middleware.SchedulerConfig{})
		outerSched := newScheduler(t, middleware.SchedulerConfig{})
		l := middleware.Chain(m,
			middleware.AutoExtend(middleware.WithScheduler(outerSched)),
			middleware.AutoExtend(middleware.WithScheduler(innerSched)))
		lease, err := l.TryLock(t.Context(), "k")
		require.NoError(t, err)
		assert.Equal(t, 1, innerSched.Stats().Leases)
		assert.Equal(t, 0, outerSched.Stats().Leases, "an auto-extended lease is not renewed twice")
		require.NoError(t, lease.Unlock(t.Context()))
		assert.Equal(t, 0, innerSched.Stats().Leases)
	})
}

// opaque is a Middleware whose leases hide the lease they wrap: no Unwrap,
// no Deadline.
func opaque(next mutex.Locker) mutex.Locker { return opaqueLocker{next} }

type opaqueLocker struct{ mutex.Locker }

type opaqueLease struct {
	mutex.Lease
	extends *atomic.Int64
}

var extendCount atomic.Int64

func (o opaqueLocker) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	l, err := o.Locker.TryLock(ctx, keys...)
	if err != nil {
		return nil, err
	}
	return opaqueLease{l, &extendCount}, nil
}

func (o opaqueLease) Extend(ctx context.Context) error {
	o.extends.Add(1)
	return o.Lease.Extend(ctx)
}

func TestAutoExtendWithoutDeadline(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		cfg := mutex.Config{Prefix: prefix(t), TTL: time.Second}
		m := newMutex(t, backend.Client(t), cfg)
		other := newMutex(t, backend.Client(t), cfg)
		s := newScheduler(t, middleware.SchedulerConfig{})
		l := middleware.Chain(m, middleware.AutoExtend(middleware.WithScheduler(s), middleware.WithInterval(100*time.Millisecond)), opaque)
		before := extendCount.Load()
		lease, err := l.TryLock(t.Context(), "k")
		require.NoError(t, err)
		granted := time.Now()
		// Twenty-five renewals every 100ms span more than twice the TTL.
		waitRenewals(t, s, 25)
		assert.GreaterOrEqual(t, time.Since(granted), 25*100*time.Millisecond-100*time.Millisecond)
		assert.GreaterOrEqual(t, extendCount.Load()-before, int64(25), "renewed through the opaque lease")
		require.NoError(t, lease.Err())
		_, err = other.TryLock(t.Context(), "k")
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.NoError(t, lease.Unlock(t.Context()))
	})
}

// countHook counts the commands and pipelines a client sends.
type countHook struct{ cmds, pipes atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipes.Add(1)
		return next(ctx, cmds)
	}
}

func (h *countHook) roundTrips() int64 { return h.cmds.Load() + h.pipes.Load() }

func TestAutoExtendBatchesRenewals(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		c := backend.Client(t)
		hook := &countHook{}
		c.AddHook(hook)
		cfg := mutex.Config{Prefix: prefix(t), TTL: 3 * time.Second}
		m := newMutex(t, c, cfg)
		s := newScheduler(t, middleware.SchedulerConfig{Window: 300 * time.Millisecond})
		l := middleware.AutoExtend(middleware.WithScheduler(s))(m)

		const n = 200
		// The first extension on a server loads the script there, one lease
		// at a time: extend the keys once beforehand, so that the script is
		// loaded on every server they live on when the renewals are counted.
		warm := make([]mutex.Lease, n)
		for i := range warm {
			var err error
			warm[i], err = m.TryLock(t.Context(), fmt.Sprintf("k%d", i))
			require.NoError(t, err)
		}
		for i, err := range mutex.ExtendMany(t.Context(), warm...) {
			require.NoError(t, err, "lease %d", i)
		}
		for _, lease := range warm {
			require.NoError(t, lease.Unlock(t.Context()))
		}

		goroutines := runtime.NumGoroutine()
		leases := make([]mutex.Lease, n)
		for i := range leases {
			var err error
			leases[i], err = l.TryLock(t.Context(), fmt.Sprintf("k%d", i))
			require.NoError(t, err)
		}
		t.Cleanup(func() {
			for _, lease := range leases {
				lease.Unlock(context.Background())
			}
		})
		trips := hook.roundTrips()
		waitRenewals(t, s, 3*n)
		assert.LessOrEqual(t, runtime.NumGoroutine()-goroutines, middleware.DefaultWorkers+1,
			"one goroutine per scheduler plus its workers, none per lease")
		st := s.Stats()
		trips = hook.roundTrips() - trips
		t.Logf("%d renewals in %d batches, %d round trips", st.Renewals, st.Batches, trips)
		assert.LessOrEqual(t, st.Batches*10, st.Renewals, "renewals falling due together are batched")
		assert.LessOrEqual(t, trips*10, int64(st.Renewals), "a batch is one pipeline")
		for _, lease := range leases {
			require.NoError(t, lease.Err())
		}
	})
}

// TestAutoExtendSurvivesShortOutage pauses Redis for less than the validity
// left: renewals fail with timeouts, are retried, and the lease lives on.
func TestAutoExtendSurvivesShortOutage(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t, func(o *redis.Options) {
		o.MaxRetries = -1
		o.ReadTimeout = 100 * time.Millisecond
		o.WriteTimeout = 100 * time.Millisecond
	})
	cfg := mutex.Config{Prefix: prefix(t), TTL: 3 * time.Second}
	m := newMutex(t, c, cfg)
	s := newScheduler(t, middleware.SchedulerConfig{})
	l := middleware.AutoExtend(middleware.WithScheduler(s), middleware.WithInterval(200*time.Millisecond))(m)
	lease, err := l.TryLock(t.Context(), "k")
	require.NoError(t, err)
	waitRenewals(t, s, 1)

	srv.Pause(t)
	require.Eventually(t, func() bool { return s.Stats().Failures >= 2 }, 10*time.Second, time.Millisecond)
	srv.Resume(t)
	renewals := s.Stats().Renewals
	failures := s.Stats().Failures
	// A renewal that succeeds after the outage.
	require.Eventually(t, func() bool {
		st := s.Stats()
		return st.Renewals-renewals > st.Failures-failures
	}, 10*time.Second, time.Millisecond)
	require.NoError(t, lease.Err(), "the lease outlived the outage")
	require.NoError(t, lease.Unlock(t.Context()))
}

// TestAutoExtendPausedPastTTL stops Redis (SIGSTOP) for longer than the TTL
// while a lease is renewed. The lease must report its loss, and a second
// holder waiting for the key may only get it after that report.
func TestAutoExtendPausedPastTTL(t *testing.T) {
	srv := redistest.Start(t)
	ttl := time.Second
	cfg := mutex.Config{Prefix: prefix(t), TTL: ttl}
	m := newMutex(t, srv.Client(t), cfg)
	second := newMutex(t, srv.Client(t), cfg)
	s := newScheduler(t, middleware.SchedulerConfig{})
	l := middleware.AutoExtend(middleware.WithScheduler(s))(m)

	lease, err := l.Lock(t.Context(), "k")
	require.NoError(t, err)
	type grant struct {
		lease mutex.Lease
		err   error
		told  bool // whether the first holder had been told at the grant
	}
	got := make(chan grant, 1)
	go func() {
		l2, err := second.Lock(t.Context(), "k")
		got <- grant{l2, err, isDone(lease)}
	}()
	// The lease outlives several TTLs before the pause.
	waitRenewals(t, s, 5)
	require.NoError(t, lease.Err())

	srv.Pause(t)
	deadline := deadlineOf(t, lease)
	<-lease.Done()
	require.ErrorIs(t, lease.Err(), mutex.ErrNotHeld)
	assert.Less(t, time.Since(deadline), time.Second, "told at the validity deadline")
	// Stay paused past the TTL, so that Redis expires the key as it resumes.
	time.Sleep(ttl)
	srv.Resume(t)

	g := <-got
	require.NoError(t, g.err)
	assert.True(t, g.told, "the second holder got the key before the first was told of the loss")
	// The second lease's validity counts from when its acquire was sent,
	// which may have been during the pause: it may have run out already.
	if err := g.lease.Unlock(t.Context()); err != nil {
		require.ErrorIs(t, err, mutex.ErrNotHeld)
	}
	unlockErr := lease.Unlock(t.Context())
	require.True(t, errors.Is(unlockErr, mutex.ErrNotHeld), "%v", unlockErr)
	require.Eventually(t, func() bool { return s.Stats().Leases == 0 }, 10*time.Second, time.Millisecond)
}

func isDone(l mutex.Lease) bool {
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

// TestAutoExtendUnlockHonoursContext stalls the connection of a renewal in
// flight and unlocks meanwhile with a 200ms context. Unlock must not wait
// for the renewal: it releases the keys on another connection at once, and
// the renewal, once it reaches Redis, changes nothing.
func TestAutoExtendUnlockHonoursContext(t *testing.T) {
	for _, cc := range redistest.FaultConfigs {
		t.Run(cc.Name, func(t *testing.T) {
			srv := redistest.Shared(t)
			proxy := redistest.NewProxy(t, srv.Addr())
			// Connections dialled before the stall go through the proxy;
			// later ones go straight to the server.
			stalled := redistest.NewDetour(proxy, srv.Addr())
			c := stalled.Client(t, srv, cc.Mod)
			cfg := mutex.Config{Prefix: prefix(t), TTL: time.Second}
			m := newMutex(t, c, cfg)
			s := newScheduler(t, middleware.SchedulerConfig{})
			l := middleware.AutoExtend(middleware.WithScheduler(s), middleware.WithInterval(100*time.Millisecond))(m)
			lease, err := l.TryLock(t.Context(), "k")
			require.NoError(t, err)
			waitRenewals(t, s, 1)
			require.Equal(t, uint32(1), c.PoolStats().TotalConns, "one pooled connection, through the proxy")

			stalled.Bypass()
			proxy.Pause()
			defer proxy.Resume()
			select {
			case <-stalled.Started(): // the next renewal
			case <-time.After(10 * time.Second):
				t.Fatal("no renewal started")
			}
			// It has taken the only connection, which stalls.
			require.Eventually(t, func() bool { return c.PoolStats().IdleConns == 0 },
				10*time.Second, time.Millisecond)
			renewals := s.Stats().Renewals

			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			err = lease.Unlock(ctx)
			elapsed := time.Since(start)
			require.NoError(t, err)
			assert.Less(t, elapsed, 200*time.Millisecond, "Unlock waited for the renewal in flight")
			assert.Empty(t, keysLeft(t, srv.Client(t), cfg.Prefix))
			assert.Equal(t, 0, s.Stats().Leases)

			// The renewal reaches Redis after the release and finds the key
			// gone.
			proxy.Resume()
			require.Eventually(t, func() bool { return s.Stats().Renewals > renewals },
				10*time.Second, time.Millisecond)
			assert.Empty(t, keysLeft(t, srv.Client(t), cfg.Prefix), "the late renewal changed nothing")
			assert.ErrorIs(t, lease.Err(), mutex.ErrReleased)
		})
	}
}

// TestAutoExtendErrorText checks that only the sentinel carries the package
// prefix: bad input reads "mutex: invalid argument: <detail>", and each wrap
// adds only what it did.
func TestAutoExtendErrorText(t *testing.T) {
	m := newMutex(t, redistest.Shared(t).Client(t), mutex.Config{Prefix: prefix(t)})
	for _, tc := range []struct {
		opts []middleware.AutoExtendOption
		want string
	}{
		{[]middleware.AutoExtendOption{middleware.WithInterval(-time.Second)},
			"mutex: invalid argument: auto-extend interval -1s, want > 0"},
		{[]middleware.AutoExtendOption{middleware.WithThreshold(0)},
			"mutex: invalid argument: auto-extend threshold 0s, want > 0"},
		{[]middleware.AutoExtendOption{middleware.WithScheduler(nil)},
			"mutex: invalid argument: nil Scheduler for auto-extend"},
		{[]middleware.AutoExtendOption{nil},
			"mutex: invalid argument: nil option for auto-extend"},
	} {
		_, err := middleware.AutoExtend(tc.opts...)(m).TryLock(t.Context(), "k")
		require.EqualError(t, err, tc.want)
	}
	_, err := middleware.AutoExtend()(nil).Lock(t.Context(), "k")
	require.EqualError(t, err, "mutex: invalid argument: nil Locker for auto-extend")
	_, err = middleware.NewScheduler(middleware.SchedulerConfig{Window: -time.Second})
	require.ErrorIs(t, err, mutex.ErrInvalid)
	assert.Equal(t, 1, strings.Count(err.Error(), "mutex:"), "%v", err)

	s := newScheduler(t, middleware.SchedulerConfig{})
	require.NoError(t, s.Close())
	_, err = middleware.AutoExtend(middleware.WithScheduler(s))(m).TryLock(t.Context(), "k")
	require.EqualError(t, err, "auto-extend: renew: mutex: closed")
	require.ErrorIs(t, err, mutex.ErrClosed)
}
