package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/otellock"
	"github.com/distlock/distlock/redisurl"
)

func main() {
	// REDIS_URL names the Redis to use, in any form redisurl.Open accepts;
	// without it, the example runs an embedded, in-memory Redis.
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			log.Fatal(err)
		}
		defer mr.Close()
		redisURL = "redis://" + mr.Addr()
	}
	exp := exportStdout
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		exp = exportOTLP
	}
	if err := run(context.Background(), redisURL, os.Stdout, exp); err != nil {
		log.Fatal(err)
	}
}

// export says where spans and metrics go.
type export int

const (
	exportStdout export = iota // to out, as indented JSON
	exportOTLP                 // to the collector named by OTEL_EXPORTER_OTLP_*
)

// providers returns SDK providers for exp and a function that flushes and
// stops them.
func providers(ctx context.Context, exp export, out io.Writer) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider, func(context.Context) error, error) {
	var (
		spans   sdktrace.SpanExporter
		metrics sdkmetric.Exporter
		err     error
	)
	switch exp {
	case exportOTLP:
		if spans, err = otlptracehttp.New(ctx); err != nil {
			return nil, nil, nil, err
		}
		if metrics, err = otlpmetrichttp.New(ctx); err != nil {
			return nil, nil, nil, err
		}
	default:
		if spans, err = stdouttrace.New(stdouttrace.WithWriter(out), stdouttrace.WithPrettyPrint()); err != nil {
			return nil, nil, nil, err
		}
		if metrics, err = stdoutmetric.New(stdoutmetric.WithWriter(out), stdoutmetric.WithPrettyPrint()); err != nil {
			return nil, nil, nil, err
		}
	}
	res := resource.NewSchemaless(attribute.String("service.name", "distlock-otel-example"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
	// The reader exports once more when the provider shuts down, so the
	// final values are exported however short the run.
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(metrics)),
		sdkmetric.WithResource(res))
	shutdown := func(ctx context.Context) error {
		return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
	}
	return tp, mp, shutdown, nil
}

func run(ctx context.Context, redisURL string, out io.Writer, exp export) (err error) {
	tp, mp, shutdown, err := providers(ctx, exp, out)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, shutdown(sctx))
	}()

	client, err := redisurl.Open(redisURL)
	if err != nil {
		return err
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "otel-example", TTL: 5 * time.Second})
	if err != nil {
		return err
	}
	defer m.Close()
	// A Mutex with a short TTL for the lease that is lost.
	short, err := mutex.New(client, mutex.Config{Prefix: "otel-example", TTL: 100 * time.Millisecond})
	if err != nil {
		return err
	}
	defer short.Close()

	// The demo keys hold no personal data, so they are recorded as they are;
	// the default records their hashes.
	instrument := otellock.Middleware(
		otellock.WithTracerProvider(tp),
		otellock.WithMeterProvider(mp),
		otellock.WithKeyAttribute(otellock.KeyRaw),
	)
	locker, shortLocker := instrument(m), instrument(short)
	tracer := tp.Tracer("distlock-otel-example")

	// A request locks an order, while another worker finds it busy.
	reqCtx, req := tracer.Start(ctx, "POST /orders/42/pay")
	lease, err := locker.Lock(reqCtx, "order:42")
	if err != nil {
		req.End()
		return err
	}
	fmt.Fprintf(out, "locked order:42 (fence %d)\n", lease.Fence())
	if _, err := locker.TryLock(ctx, "order:42"); errors.Is(err, mutex.ErrNotObtained) {
		fmt.Fprintln(out, "another worker: order:42 is busy")
	}
	waitCtx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = locker.Lock(waitCtx, "order:42")
	cancel()
	if errors.Is(err, mutex.ErrNotObtained) {
		fmt.Fprintln(out, "a third worker gave up waiting")
	}
	if err := lease.Extend(reqCtx); err != nil {
		req.End()
		return err
	}
	if err := lease.Unlock(reqCtx); err != nil {
		req.End()
		return err
	}
	req.End()

	// A job outlives its lease: the loss becomes an event on the job's span.
	jobCtx, job := tracer.Start(ctx, "nightly-report")
	defer job.End()
	lost, err := shortLocker.Lock(jobCtx, "report:2026")
	if err != nil {
		return err
	}
	<-lost.Done() // the work took longer than the TTL, without Extend
	if err := lost.Unlock(jobCtx); errors.Is(err, mutex.ErrNotHeld) {
		fmt.Fprintln(out, "report:2026 was lost before Unlock")
	} else if err != nil {
		return err
	}
	return nil
}
