package otellock_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/otellock"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// harness is a decorated Mutex with an in-memory span recorder and a manual
// metric reader.
type harness struct {
	rec    *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	m      *mutex.Mutex
	l      mutex.Locker
}

// newHarness returns a harness whose Mutex is on the shared server.
func newHarness(t *testing.T, ttl time.Duration, opts ...otellock.Option) *harness {
	t.Helper()
	return newHarnessOn(t, redistest.Shared(t).Client(t), ttl, opts...)
}

// newHarnessOn returns a harness whose Mutex is on c.
func newHarnessOn(t *testing.T, c redis.UniversalClient, ttl time.Duration, opts ...otellock.Option) *harness {
	t.Helper()
	h := &harness{rec: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.rec))
	h.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	t.Cleanup(func() {
		_ = h.tp.Shutdown(context.Background())
		_ = h.mp.Shutdown(context.Background())
	})
	m, err := mutex.New(c, mutex.Config{TTL: ttl})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	h.m = m
	opts = append([]otellock.Option{
		otellock.WithTracerProvider(h.tp),
		otellock.WithMeterProvider(h.mp),
	}, opts...)
	h.l = otellock.Middleware(opts...)(m)
	return h
}

// key returns a key unique to the test.
func key(t *testing.T, name string) string {
	return "otellock." + strings.ReplaceAll(t.Name(), "/", ".") + "." + name
}

// ended returns the ended spans called name.
func (h *harness) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range h.rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// one returns the only ended span called name.
func (h *harness) one(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	spans := h.ended(name)
	require.Len(t, spans, 1, "spans named %s", name)
	return spans[0]
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	return kvMap(s.Attributes())
}

func kvMap(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func (h *harness) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, h.reader.Collect(t.Context(), &rm))
	return rm
}

func findMetric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

func matches(set attribute.Set, want []attribute.KeyValue) bool {
	if set.Len() != len(want) {
		return false
	}
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// sum returns the value of the counter name for exactly the attributes want.
func sum(t *testing.T, rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	s, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a %T", name, m.Data)
	for _, dp := range s.DataPoints {
		if matches(dp.Attributes, want) {
			return dp.Value
		}
	}
	return 0
}

// histCount returns the number of measurements of the histogram name for
// exactly the attributes want, and their sum.
func histCount(t *testing.T, rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) (uint64, float64) {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0, 0
	}
	hg, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s is a %T", name, m.Data)
	for _, dp := range hg.DataPoints {
		if matches(dp.Attributes, want) {
			return dp.Count, dp.Sum
		}
	}
	return 0, 0
}

// waitDone waits for a lease to end, failing the test after a generous
// bound.
func waitDone(t *testing.T, l mutex.Lease) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("lease did not end")
	}
}
