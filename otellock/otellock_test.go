package otellock_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/otellock"
)

var (
	opLock    = otellock.AttrOperation.String(otellock.OperationLock)
	opTryLock = otellock.AttrOperation.String(otellock.OperationTryLock)
)

func outcome(v string) attribute.KeyValue { return otellock.AttrOutcome.String(v) }

func TestVersion(t *testing.T) {
	assert.Regexp(t, regexp.MustCompile(`^\d+\.\d+\.\d+$`), otellock.Version)
	assert.Equal(t, "github.com/distlock/distlock/otellock", otellock.ScopeName)

	h := newHarness(t, 0)
	lease, err := h.l.Lock(t.Context(), key(t, "a"))
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(t.Context()))

	for _, s := range h.rec.Ended() {
		assert.Equal(t, otellock.ScopeName, s.InstrumentationScope().Name, s.Name())
		assert.Equal(t, otellock.Version, s.InstrumentationScope().Version, s.Name())
	}
	rm := h.collect(t)
	require.NotEmpty(t, rm.ScopeMetrics)
	for _, sm := range rm.ScopeMetrics {
		assert.Equal(t, otellock.ScopeName, sm.Scope.Name)
		assert.Equal(t, otellock.Version, sm.Scope.Version)
	}
}

func TestObtainedSpans(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 0, otellock.WithFIFO(true))
		k1, k2 := key(t, "a"), key(t, "b")
		ctx, parent := h.tp.Tracer("test").Start(t.Context(), "request")

		lease, err := h.l.Lock(ctx, k1, k2)
		require.NoError(t, err)
		assert.Equal(t, []string{k1, k2}, lease.Keys())
		require.NoError(t, lease.Extend(ctx))
		require.NoError(t, lease.Unlock(ctx))
		parent.End()

		ps := parent.SpanContext()
		lock := h.one(t, "distlock.Lock")
		assert.Equal(t, ps.TraceID(), lock.Parent().TraceID())
		assert.Equal(t, ps.SpanID(), lock.Parent().SpanID(), "Lock is a child of the caller's span")
		assert.Equal(t, trace.SpanKindInternal, lock.SpanKind())
		assert.Equal(t, codes.Unset, lock.Status().Code)
		a := attrs(lock)
		assert.Equal(t, otellock.OutcomeObtained, a[otellock.AttrOutcome].AsString())
		assert.Equal(t, int64(2), a[otellock.AttrKeyCount].AsInt64())
		assert.Equal(t, lease.Fence(), a[otellock.AttrFence].AsInt64())
		assert.True(t, a[otellock.AttrFIFO].AsBool())
		assert.GreaterOrEqual(t, a[otellock.AttrWaitDuration].AsFloat64(), 0.0)
		assert.Equal(t, []string{otellock.HashKey(k1), otellock.HashKey(k2)}, a[otellock.AttrKeyHash].AsStringSlice())
		assert.NotContains(t, a, otellock.AttrKey)

		for _, name := range []string{"distlock.Extend", "distlock.Unlock"} {
			s := h.one(t, name)
			assert.Equal(t, ps.SpanID(), s.Parent().SpanID(), name)
			require.Len(t, s.Links(), 1, name)
			assert.Equal(t, lock.SpanContext().SpanID(), s.Links()[0].SpanContext.SpanID(), name)
			a := attrs(s)
			assert.Equal(t, otellock.OutcomeOK, a[otellock.AttrOutcome].AsString(), name)
			assert.Equal(t, lease.Fence(), a[otellock.AttrFence].AsInt64(), name)
			assert.Equal(t, codes.Unset, s.Status().Code, name)
		}
		unlock := h.one(t, "distlock.Unlock")
		assert.GreaterOrEqual(t, attrs(unlock)[otellock.AttrHoldDuration].AsFloat64(), 0.0)
		assert.False(t, unlock.StartTime().Before(lock.EndTime()), "Unlock starts after Lock ended")
		assert.Empty(t, h.ended("distlock.LeaseLost"))
	})
}

func TestRedisSpansNestUnderLock(t *testing.T) {
	// The context given to the inner Locker carries the Lock span, so spans
	// of the layers below nest under it.
	h := newHarness(t, 0)
	var seen trace.SpanContext
	probe := func(inner mutex.Locker) mutex.Locker {
		return probeLocker{Locker: inner, seen: &seen}
	}
	l := otellock.Middleware(otellock.WithTracerProvider(h.tp), otellock.WithMeterProvider(h.mp))(probe(h.m))
	lease, err := l.Lock(t.Context(), key(t, "a"))
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(t.Context()))
	lock := h.one(t, "distlock.Lock")
	assert.Equal(t, lock.SpanContext().SpanID(), seen.SpanID())
}

type probeLocker struct {
	mutex.Locker
	seen *trace.SpanContext
}

func (p probeLocker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	*p.seen = trace.SpanContextFromContext(ctx)
	return p.Locker.Lock(ctx, keys...)
}

func TestTryLockContended(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 0, otellock.WithKeyAttribute(otellock.KeyRaw))
		k := key(t, "a")
		held, err := h.m.Lock(t.Context(), k)
		require.NoError(t, err)
		t.Cleanup(func() { _ = held.Unlock(context.Background()) })

		_, err = h.l.TryLock(t.Context(), k)
		require.ErrorIs(t, err, mutex.ErrNotObtained)

		s := h.one(t, "distlock.TryLock")
		assert.Equal(t, codes.Unset, s.Status().Code, "contention is not a span error")
		assert.Empty(t, s.Events())
		a := attrs(s)
		assert.Equal(t, otellock.OutcomeNotObtained, a[otellock.AttrOutcome].AsString())
		assert.Equal(t, k, a[otellock.AttrBlockingKey].AsString())
		assert.NotContains(t, a, otellock.AttrFence)

		rm := h.collect(t)
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricAcquisitions, opTryLock, outcome(otellock.OutcomeNotObtained)))
		n, _ := histCount(t, rm, otellock.MetricWaitDuration, opTryLock, outcome(otellock.OutcomeNotObtained))
		assert.Equal(t, uint64(1), n)
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricHeld))
	})
}

// TestLockTimeout checks that a wait budget that runs out (a context
// deadline) is the outcome timeout, not an error, with the blocking key.
func TestLockTimeout(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 0)
		k := key(t, "a")
		held, err := h.m.Lock(t.Context(), k)
		require.NoError(t, err)
		t.Cleanup(func() { _ = held.Unlock(context.Background()) })

		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err = h.l.Lock(ctx, k)
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.ErrorIs(t, err, context.DeadlineExceeded)

		s := h.one(t, "distlock.Lock")
		assert.Equal(t, codes.Unset, s.Status().Code)
		a := attrs(s)
		assert.Equal(t, otellock.OutcomeTimeout, a[otellock.AttrOutcome].AsString())
		assert.Equal(t, otellock.HashKey(k), a[otellock.AttrBlockingKeyHash].AsString())
		assert.GreaterOrEqual(t, a[otellock.AttrWaitDuration].AsFloat64(), 0.05)
		assert.False(t, s.EndTime().Before(s.StartTime().Add(50*time.Millisecond)), "the span covers the wait")

		rm := h.collect(t)
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricAcquisitions, opLock, outcome(otellock.OutcomeTimeout)))
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricAcquisitions, opLock, outcome(otellock.OutcomeCancelled)))
	})
}

// TestLockCancelled checks that a cancelled wait is the outcome cancelled,
// told apart from timeout.
func TestLockCancelled(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 0)
		k := key(t, "a")
		held, err := h.m.Lock(t.Context(), k)
		require.NoError(t, err)
		t.Cleanup(func() { _ = held.Unlock(context.Background()) })

		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err = h.l.Lock(ctx, k)
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		require.ErrorIs(t, err, context.Canceled)

		s := h.one(t, "distlock.Lock")
		assert.Equal(t, codes.Unset, s.Status().Code)
		a := attrs(s)
		assert.Equal(t, otellock.OutcomeCancelled, a[otellock.AttrOutcome].AsString())
		assert.Equal(t, otellock.HashKey(k), a[otellock.AttrBlockingKeyHash].AsString())

		rm := h.collect(t)
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricAcquisitions, opLock, outcome(otellock.OutcomeCancelled)))
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricAcquisitions, opLock, outcome(otellock.OutcomeTimeout)))
	})
}

// TestExtendTimeout checks that an Extend whose deadline passed is the
// outcome timeout, counted as a failed extension but not a span error.
func TestExtendTimeout(t *testing.T) {
	h := newHarness(t, 0)
	lease, err := h.l.Lock(t.Context(), key(t, "a"))
	require.NoError(t, err)
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	require.ErrorIs(t, lease.Extend(ctx), context.DeadlineExceeded)
	require.NoError(t, lease.Unlock(t.Context()))

	s := h.one(t, "distlock.Extend")
	assert.Equal(t, codes.Unset, s.Status().Code)
	assert.Equal(t, otellock.OutcomeTimeout, attrs(s)[otellock.AttrOutcome].AsString())
	rm := h.collect(t)
	assert.Equal(t, int64(1), sum(t, rm, otellock.MetricExtendFailures, outcome(otellock.OutcomeTimeout)))
}

func TestRedisFailureIsSpanError(t *testing.T) {
	h := newHarness(t, 0)
	srv := redistest.Start(t)
	m, err := mutex.New(srv.Client(t, func(o *redis.Options) { o.MaxRetries = -1 }), mutex.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	l := otellock.Middleware(otellock.WithTracerProvider(h.tp), otellock.WithMeterProvider(h.mp))(m)
	srv.Stop(t)

	_, err = l.TryLock(t.Context(), key(t, "a"))
	require.Error(t, err)
	require.NotErrorIs(t, err, mutex.ErrNotObtained)

	s := h.one(t, "distlock.TryLock")
	assert.Equal(t, codes.Error, s.Status().Code)
	assert.Equal(t, otellock.OutcomeError, attrs(s)[otellock.AttrOutcome].AsString())
	require.Len(t, s.Events(), 1)
	assert.Equal(t, "exception", s.Events()[0].Name)
	rm := h.collect(t)
	assert.Equal(t, int64(1), sum(t, rm, otellock.MetricAcquisitions, opTryLock, outcome(otellock.OutcomeError)))
}

func TestLostLeaseRecordsSpan(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 100*time.Millisecond)
		k := key(t, "a")
		lease, err := h.l.Lock(t.Context(), k)
		require.NoError(t, err)
		rm := h.collect(t)
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricHeld))

		waitDone(t, lease) // the validity runs out without an Extend
		require.ErrorIs(t, lease.Err(), mutex.ErrNotHeld)
		// The watcher records the loss span before the metrics, so once the
		// lost count is seen the span is there.
		require.Eventually(t, func() bool {
			return sum(t, h.collect(t), otellock.MetricLost) == 1
		}, 30*time.Second, 5*time.Millisecond)

		lock := h.one(t, "distlock.Lock")
		lost := h.one(t, "distlock.LeaseLost")
		assert.Equal(t, lock.SpanContext().SpanID(), lost.Parent().SpanID(), "LeaseLost is a child of the Lock span")
		assert.Equal(t, lock.SpanContext().TraceID(), lost.SpanContext().TraceID())
		assert.Equal(t, codes.Error, lost.Status().Code)
		a := attrs(lost)
		assert.Equal(t, lease.Fence(), a[otellock.AttrFence].AsInt64())
		assert.Equal(t, otellock.EndLost, a[otellock.AttrEnd].AsString())
		assert.GreaterOrEqual(t, a[otellock.AttrHoldDuration].AsFloat64(), 0.05)
		assert.NotContains(t, lost.Status().Description, k, "the key is not quoted with KeyHashed")

		rm = h.collect(t)
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricHeld))
		n, _ := histCount(t, rm, otellock.MetricHoldDuration, otellock.AttrEnd.String(otellock.EndLost))
		assert.Equal(t, uint64(1), n)

		// A late Unlock reports the loss on its span and counts nothing twice.
		require.ErrorIs(t, lease.Unlock(t.Context()), mutex.ErrNotHeld)
		unlock := h.one(t, "distlock.Unlock")
		assert.Equal(t, codes.Error, unlock.Status().Code)
		assert.Equal(t, otellock.OutcomeNotHeld, attrs(unlock)[otellock.AttrOutcome].AsString())
		rm = h.collect(t)
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricLost))
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricHeld))
	})
}

func TestLostLeaseAddsEventToCallerSpan(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 0)
		k := key(t, "a")
		ctx, parent := h.tp.Tracer("test").Start(t.Context(), "job")
		lease, err := h.l.Lock(ctx, k)
		require.NoError(t, err)

		// Another owner takes the key, as after a failover that lost it.
		rdb := backend.Client(t)
		n, err := rdb.Del(t.Context(), h.m.Prefix()+":{"+k+"}").Result()
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		other, err := h.m.TryLock(t.Context(), k)
		require.NoError(t, err)
		t.Cleanup(func() { _ = other.Unlock(context.Background()) })

		err = lease.Extend(ctx)
		require.ErrorIs(t, err, mutex.ErrNotHeld)
		parent.End()

		p := h.one(t, "job")
		var ev *sdktrace.Event
		for i := range p.Events() {
			if p.Events()[i].Name == "distlock.lease.lost" {
				ev = &p.Events()[i]
			}
		}
		require.NotNil(t, ev, "the caller's span got the loss event")
		a := kvMap(ev.Attributes)
		assert.Equal(t, lease.Fence(), a[otellock.AttrFence].AsInt64())
		assert.Equal(t, []string{otellock.HashKey(k)}, a[otellock.AttrKeyHash].AsStringSlice())
		assert.Empty(t, h.ended("distlock.LeaseLost"), "no separate span while the caller's span records")

		ext := h.one(t, "distlock.Extend")
		assert.Equal(t, codes.Error, ext.Status().Code)
		assert.Equal(t, otellock.OutcomeNotHeld, attrs(ext)[otellock.AttrOutcome].AsString())

		rm := h.collect(t)
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricExtendFailures, outcome(otellock.OutcomeNotHeld)))
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricLost))
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricHeld))
	})
}

func TestMetricsWorkload(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 10*time.Second)
		ctx := t.Context()
		k := key(t, "a")

		// Three Lock+Unlock cycles.
		for range 3 {
			lease, err := h.l.Lock(ctx, k)
			require.NoError(t, err)
			require.NoError(t, lease.Unlock(ctx))
		}
		// A held lease, then a contended TryLock and a cancelled Lock.
		held, err := h.l.Lock(ctx, k)
		require.NoError(t, err)
		assert.Equal(t, int64(1), sum(t, h.collect(t), otellock.MetricHeld))
		_, err = h.l.TryLock(ctx, k)
		require.ErrorIs(t, err, mutex.ErrNotObtained)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err = h.l.Lock(cctx, k)
		require.ErrorIs(t, err, context.Canceled)
		// Two extensions, then Unlock; a second Unlock and an Extend after it fail.
		require.NoError(t, held.Extend(ctx))
		require.NoError(t, held.Extend(ctx))
		require.NoError(t, held.Unlock(ctx))
		require.ErrorIs(t, held.Unlock(ctx), mutex.ErrReleased)
		require.ErrorIs(t, held.Extend(ctx), mutex.ErrReleased)
		// Bad input is an error outcome.
		_, err = h.l.Lock(ctx, "")
		require.ErrorIs(t, err, mutex.ErrInvalid)

		rm := h.collect(t)
		assert.Equal(t, int64(4), sum(t, rm, otellock.MetricAcquisitions, opLock, outcome(otellock.OutcomeObtained)))
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricAcquisitions, opLock, outcome(otellock.OutcomeCancelled)))
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricAcquisitions, opLock, outcome(otellock.OutcomeError)))
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricAcquisitions, opTryLock, outcome(otellock.OutcomeNotObtained)))
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricAcquisitions, opTryLock, outcome(otellock.OutcomeObtained)))

		n, total := histCount(t, rm, otellock.MetricWaitDuration, opLock, outcome(otellock.OutcomeObtained))
		assert.Equal(t, uint64(4), n)
		assert.Greater(t, total, 0.0)
		n, _ = histCount(t, rm, otellock.MetricHoldDuration, otellock.AttrEnd.String(otellock.EndUnlocked))
		assert.Equal(t, uint64(4), n)
		n, _ = histCount(t, rm, otellock.MetricHoldDuration, otellock.AttrEnd.String(otellock.EndLost))
		assert.Equal(t, uint64(0), n)

		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricHeld))
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricLost))
		assert.Equal(t, int64(1), sum(t, rm, otellock.MetricExtendFailures, outcome(otellock.OutcomeReleased)))

		m, ok := findMetric(rm, otellock.MetricWaitDuration)
		require.True(t, ok)
		assert.Equal(t, "s", m.Unit)
		m, ok = findMetric(rm, otellock.MetricHeld)
		require.True(t, ok)
		assert.Equal(t, "{lease}", m.Unit)
	})
}

func TestKeyAttributeModes(t *testing.T) {
	secret := "user:alice@example.com"
	cases := []struct {
		name string
		opts []otellock.Option
		want func(t *testing.T, a map[attribute.Key]attribute.Value, k string)
	}{
		{"default", nil, func(t *testing.T, a map[attribute.Key]attribute.Value, k string) {
			assert.Equal(t, []string{otellock.HashKey(k)}, a[otellock.AttrKeyHash].AsStringSlice())
			assert.NotContains(t, a, otellock.AttrKey)
		}},
		{"hashed", []otellock.Option{otellock.WithKeyAttribute(otellock.KeyHashed)}, func(t *testing.T, a map[attribute.Key]attribute.Value, k string) {
			assert.Equal(t, []string{otellock.HashKey(k)}, a[otellock.AttrKeyHash].AsStringSlice())
			assert.NotContains(t, a, otellock.AttrKey)
		}},
		{"raw", []otellock.Option{otellock.WithKeyAttribute(otellock.KeyRaw)}, func(t *testing.T, a map[attribute.Key]attribute.Value, k string) {
			assert.Equal(t, []string{k}, a[otellock.AttrKey].AsStringSlice())
			assert.NotContains(t, a, otellock.AttrKeyHash)
		}},
		{"omitted", []otellock.Option{otellock.WithKeyAttribute(otellock.KeyOmitted)}, func(t *testing.T, a map[attribute.Key]attribute.Value, k string) {
			assert.NotContains(t, a, otellock.AttrKey)
			assert.NotContains(t, a, otellock.AttrKeyHash)
		}},
		{"unknown", []otellock.Option{otellock.WithKeyAttribute(otellock.KeyMode(42))}, func(t *testing.T, a map[attribute.Key]attribute.Value, k string) {
			assert.NotContains(t, a, otellock.AttrKey)
			assert.NotContains(t, a, otellock.AttrKeyHash)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0, tc.opts...)
			k := key(t, secret)
			ctx := t.Context()
			lease, err := h.l.Lock(ctx, k)
			require.NoError(t, err)
			_, err = h.l.Check(ctx, k)
			require.NoError(t, err)
			// A reentrant Lock fails with an error that quotes the key.
			_, err = h.l.Lock(mutex.ContextWithLease(ctx, h.l, lease), k)
			require.ErrorIs(t, err, mutex.ErrReentrant)
			require.Contains(t, err.Error(), secret)
			require.NoError(t, lease.Unlock(ctx))

			spans := h.rec.Ended()
			require.Len(t, spans, 4)
			for _, s := range spans {
				tc.want(t, attrs(s), k)
			}
			if tc.name == "raw" {
				return
			}
			for _, s := range spans {
				stub := tracetest.SpanStubFromReadOnlySpan(s)
				text := strings.Join([]string{stub.Status.Description, spanText(stub)}, " ")
				assert.NotContains(t, text, secret, "span %s", s.Name())
			}
		})
	}
}

// spanText renders every attribute and event of a span.
func spanText(s tracetest.SpanStub) string {
	var b strings.Builder
	for _, kv := range s.Attributes {
		b.WriteString(kv.Value.String() + " ")
	}
	for _, ev := range s.Events {
		b.WriteString(ev.Name + " ")
		for _, kv := range ev.Attributes {
			b.WriteString(kv.Value.String() + " ")
		}
	}
	return b.String()
}

func TestCheckSpan(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 0)
		k1, k2 := key(t, "a"), key(t, "b")
		lease, err := h.l.Lock(t.Context(), k1)
		require.NoError(t, err)
		st, err := h.l.Check(t.Context(), k1, k2)
		require.NoError(t, err)
		assert.Equal(t, mutex.PartiallyLocked, st)
		require.NoError(t, lease.Unlock(t.Context()))
		a := attrs(h.one(t, "distlock.Check"))
		assert.Equal(t, otellock.StatusPartiallyLocked, a[otellock.AttrStatus].AsString())
		assert.Equal(t, int64(2), a[otellock.AttrKeyCount].AsInt64())
	})
}

func TestLeasePassesThrough(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 0)
		k := key(t, "a")
		lease, err := h.l.Lock(t.Context(), k)
		require.NoError(t, err)
		defer func() { require.NoError(t, lease.Unlock(t.Context())) }()

		u, ok := lease.(mutex.Unwrapper)
		require.True(t, ok)
		inner := u.Unwrap()
		assert.Equal(t, inner.Token(), lease.Token())
		assert.Equal(t, inner.Fence(), lease.Fence())
		assert.Equal(t, inner.Done(), lease.Done())

		d, ok := mutex.Deadline(lease)
		require.True(t, ok, "the Deadline of the core lease is found through Unwrap")
		assert.Equal(t, inner.(mutex.Deadliner).Deadline(), d)
		assert.False(t, mutex.IsAutoExtended(lease), "the core lease is not auto-extended")

		// The core recognises its lease behind the decorator.
		_, err = h.l.TryLock(mutex.ContextWithLease(t.Context(), h.l, lease), k)
		require.ErrorIs(t, err, mutex.ErrReentrant)
	})
}

func TestAutoExtendedPassesThrough(t *testing.T) {
	h := newHarness(t, 0)
	l := otellock.Middleware(otellock.WithTracerProvider(h.tp), otellock.WithMeterProvider(h.mp))(autoLocker{h.m})
	lease, err := l.Lock(t.Context(), key(t, "a"))
	require.NoError(t, err)
	defer func() { require.NoError(t, lease.Unlock(t.Context())) }()
	assert.True(t, mutex.IsAutoExtended(lease), "AutoExtended is found through Unwrap")
	_, ok := mutex.Deadline(lease)
	assert.False(t, ok, "the inner lease has no Deadline")
}

// autoLocker returns leases that report AutoExtended and hide Deadline.
type autoLocker struct{ mutex.Locker }

func (a autoLocker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	l, err := a.Locker.Lock(ctx, keys...)
	if err != nil {
		return nil, err
	}
	return autoLease{l}, nil
}

type autoLease struct{ mutex.Lease }

func (autoLease) AutoExtended() bool { return true }

func TestGlobalProviders(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	prevT, prevM := otel.GetTracerProvider(), otel.GetMeterProvider()
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prevT)
		otel.SetMeterProvider(prevM)
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})

	m, err := mutex.New(redistest.Shared(t).Client(t), mutex.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	l := otellock.Middleware()(m)
	lease, err := l.Lock(t.Context(), key(t, "a"))
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(t.Context()))

	var names []string
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
	}
	assert.Equal(t, []string{"distlock.Lock", "distlock.Unlock"}, names)
	h := &harness{reader: reader}
	assert.Equal(t, int64(1), sum(t, h.collect(t), otellock.MetricAcquisitions, opLock, outcome(otellock.OutcomeObtained)))
}

func TestNoopProviders(t *testing.T) {
	// Without SDKs nothing is recorded and no watcher goroutine is left
	// behind (goleak checks the package).
	m, err := mutex.New(redistest.Shared(t).Client(t), mutex.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	l := otellock.Middleware(otellock.WithTracerProvider(nil), otellock.WithMeterProvider(nil), nil)(m)
	lease, err := l.Lock(t.Context(), key(t, "a"))
	require.NoError(t, err)
	require.NoError(t, lease.Unlock(t.Context()))
	require.ErrorIs(t, lease.Unlock(t.Context()), mutex.ErrReleased)
	assert.True(t, errors.Is(lease.Err(), mutex.ErrReleased))
}

func TestEarlyLossIsReported(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		// The validity of a MinTTL lease runs out before the watcher starts.
		h := newHarnessOn(t, backend.Client(t), mutex.MinTTL)
		lease, err := h.l.Lock(t.Context(), key(t, "a"))
		require.NoError(t, err)
		waitDone(t, lease)
		require.Eventually(t, func() bool {
			return sum(t, h.collect(t), otellock.MetricLost) == 1
		}, 30*time.Second, 5*time.Millisecond)
		h.one(t, "distlock.LeaseLost")
		assert.Equal(t, int64(0), sum(t, h.collect(t), otellock.MetricHeld))
	})
}

func TestLongHoldThenUnlock(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		// A lease held past the start of its watcher is unlocked normally; the
		// watcher ends with it (goleak checks the package).
		h := newHarnessOn(t, backend.Client(t), 0)
		lease, err := h.l.Lock(t.Context(), key(t, "a"))
		require.NoError(t, err)
		time.Sleep(30 * time.Millisecond)
		require.NoError(t, lease.Unlock(t.Context()))
		rm := h.collect(t)
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricHeld))
		assert.Equal(t, int64(0), sum(t, rm, otellock.MetricLost))
		n, total := histCount(t, rm, otellock.MetricHoldDuration, otellock.AttrEnd.String(otellock.EndUnlocked))
		assert.Equal(t, uint64(1), n)
		assert.GreaterOrEqual(t, total, 0.03)
		assert.Empty(t, h.ended("distlock.LeaseLost"))
	})
}

func TestInChainWithAutoExtend(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		h := newHarnessOn(t, backend.Client(t), 300*time.Millisecond)
		l := middleware.Chain(h.m,
			otellock.Middleware(otellock.WithTracerProvider(h.tp), otellock.WithMeterProvider(h.mp)),
			middleware.Retry(),
			middleware.AutoExtend(),
		)
		k := key(t, "a")
		lease, err := l.Lock(t.Context(), k)
		require.NoError(t, err)
		assert.True(t, mutex.IsAutoExtended(lease), "AutoExtended is found through Unwrap")

		// Another owner takes the key: the next background renewal finds it
		// gone, which ends the lease, and the loss is recorded.
		rdb := backend.Client(t)
		n, err := rdb.Del(t.Context(), h.m.Prefix()+":{"+k+"}").Result()
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		other, err := h.m.TryLock(t.Context(), k)
		require.NoError(t, err)
		t.Cleanup(func() { _ = other.Unlock(context.Background()) })

		waitDone(t, lease)
		require.ErrorIs(t, lease.Err(), mutex.ErrNotHeld)
		require.Eventually(t, func() bool {
			return sum(t, h.collect(t), otellock.MetricLost) == 1
		}, 30*time.Second, 5*time.Millisecond)
		lost := h.one(t, "distlock.LeaseLost")
		assert.Equal(t, h.one(t, "distlock.Lock").SpanContext().SpanID(), lost.Parent().SpanID())
		assert.Empty(t, h.ended("distlock.Extend"), "background renewals are not Extend calls of this layer")
		require.ErrorIs(t, lease.Unlock(t.Context()), mutex.ErrNotHeld)
	})
}

func TestFIFOAttributeFromMutex(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	rec := tracetest.NewSpanRecorder()
	tp.RegisterSpanProcessor(rec)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	c := redistest.Shared(t).Client(t)
	for _, fifo := range []bool{false, true} {
		m, err := mutex.New(c, mutex.Config{FIFO: fifo})
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Close() })
		l := otellock.Middleware(otellock.WithTracerProvider(tp))(m)
		lease, err := l.TryLock(t.Context(), key(t, fmt.Sprint(fifo)))
		require.NoError(t, err)
		require.NoError(t, lease.Unlock(t.Context()))
		spans := rec.Ended()
		var last sdktrace.ReadOnlySpan
		for _, s := range spans {
			if s.Name() == "distlock.TryLock" {
				last = s
			}
		}
		require.NotNil(t, last)
		assert.Equal(t, fifo, attrs(last)[otellock.AttrFIFO].AsBool(), "fifo=%v", fifo)
	}
}
