package otellock_test

import (
	"context"
	"fmt"
	"os"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/otellock"
	"github.com/distlock/distlock/redisurl"
)

func Example() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example"})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// In a service these are the SDK providers that export to a collector.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	locker := middleware.Chain(m, otellock.Middleware(
		otellock.WithTracerProvider(tp),
		otellock.WithMeterProvider(mp),
	))

	ctx, request := tp.Tracer("app").Start(context.Background(), "GET /invoices/42")
	lease, err := locker.Lock(ctx, "invoice:42")
	if err != nil {
		panic(err)
	}
	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}
	request.End()

	for _, s := range spans.Ended() {
		fmt.Println(s.Name())
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		panic(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, metric := range sm.Metrics {
			fmt.Println(metric.Name, metric.Unit)
		}
	}
	// Output:
	// distlock.Lock
	// distlock.Unlock
	// GET /invoices/42
	// distlock.lock.wait.duration s
	// distlock.lock.hold.duration s
	// distlock.lock.acquisitions {acquisition}
	// distlock.lock.held {lease}
}

func ExampleHashKey() {
	// With the default KeyHashed, spans carry this value instead of the key:
	// an operator can hash a suspect key to find its spans.
	fmt.Println(otellock.HashKey("invoice:42"))
	// Output: 5cd23eb33b1a2549
}

func ExampleWithKeyAttribute() {
	// Keys hold nothing sensitive here: record them as they are.
	raw := otellock.Middleware(otellock.WithKeyAttribute(otellock.KeyRaw))
	// Keys are user IDs: record no key at all.
	none := otellock.Middleware(otellock.WithKeyAttribute(otellock.KeyOmitted))
	fmt.Println(raw != nil, none != nil)
	// Output: true true
}
