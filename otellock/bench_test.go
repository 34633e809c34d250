package otellock_test

import (
	"context"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/otellock"
)

// BenchmarkOverhead measures Lock+Unlock through the decorator against the
// undecorated Mutex. The noop and sdk cases alternate one decorated and one
// undecorated Lock+Unlock per iteration, so that both see the same load, and
// report the ratio of their times as x-plain.
func BenchmarkOverhead(b *testing.B) {
	m, err := mutex.New(redistest.Shared(b).Client(b), mutex.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })

	b.Run("plain", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			lockUnlock(b, ctx, m, "bench.plain")
		}
	})
	b.Run("noop", func(b *testing.B) {
		l := otellock.Middleware(
			otellock.WithTracerProvider(tracenoop.NewTracerProvider()),
			otellock.WithMeterProvider(metricnoop.NewMeterProvider()),
		)(m)
		interleave(b, m, l)
	})
	b.Run("sdk", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithBatcher(discardExporter{}),
		)
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() {
			_ = tp.Shutdown(context.Background())
			_ = mp.Shutdown(context.Background())
		})
		l := otellock.Middleware(otellock.WithTracerProvider(tp), otellock.WithMeterProvider(mp))(m)
		interleave(b, m, l)
	})
}

func interleave(b *testing.B, plain, decorated mutex.Locker) {
	ctx := context.Background()
	var tPlain, tDecorated time.Duration
	for i := 0; b.Loop(); i++ {
		// Alternate which goes first, so neither always follows the other.
		if i%2 == 0 {
			tPlain += lockUnlock(b, ctx, plain, "bench.base")
			tDecorated += lockUnlock(b, ctx, decorated, "bench.decorated")
		} else {
			tDecorated += lockUnlock(b, ctx, decorated, "bench.decorated")
			tPlain += lockUnlock(b, ctx, plain, "bench.base")
		}
	}
	b.ReportMetric(float64(tDecorated)/float64(tPlain), "x-plain")
	b.ReportMetric(float64(tPlain.Nanoseconds())/float64(b.N), "plain-ns/op")
	b.ReportMetric(float64(tDecorated.Nanoseconds())/float64(b.N), "decorated-ns/op")
}

func lockUnlock(b *testing.B, ctx context.Context, l mutex.Locker, key string) time.Duration {
	start := time.Now()
	lease, err := l.Lock(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	if err := lease.Unlock(ctx); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }
