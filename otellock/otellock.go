package otellock

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/distlock/distlock/middleware"
	"github.com/distlock/distlock/mutex"
)

const (
	// ScopeName is the instrumentation scope name of the tracer and meter.
	ScopeName = "github.com/distlock/distlock/otellock"
	// Version is the instrumentation scope version of the tracer and meter.
	Version = "0.1.0"
)

// KeyMode says how span attributes name the locked keys.
type KeyMode int

const (
	// KeyHashed records the attribute distlock.lock.key_hash: for each key,
	// the first 16 hex digits of its SHA-256 digest. Hot keys stay
	// recognisable (hash a candidate key to compare) without their text
	// reaching the telemetry backend. It is the default. A hash is a
	// pseudonym, not an anonymisation: keys drawn from a small set (user
	// IDs, for one) can be recovered by hashing every candidate, so use
	// KeyOmitted when that matters.
	KeyHashed KeyMode = iota
	// KeyRaw records the attribute distlock.lock.key with the keys as given.
	KeyRaw
	// KeyOmitted records no key attribute. An unknown KeyMode value is
	// treated as KeyOmitted.
	KeyOmitted
)

// Option configures the middleware.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	tp      trace.TracerProvider
	mp      metric.MeterProvider
	keyMode KeyMode
	fifo    *bool
}

// WithTracerProvider sets the TracerProvider that creates the spans. The
// default, also used for nil, is the global one (otel.GetTracerProvider) at
// the time Middleware is called. As for any instrumentation, while no global
// provider has been set, the first one set later is used.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// WithMeterProvider sets the MeterProvider that creates the instruments. The
// default, also used for nil, is the global one (otel.GetMeterProvider) at
// the time Middleware is called. As for any instrumentation, while no global
// provider has been set, the first one set later is used.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// WithKeyAttribute chooses how spans name the keys: KeyHashed (the
// default), KeyRaw or KeyOmitted.
func WithKeyAttribute(mode KeyMode) Option {
	return optionFunc(func(c *config) { c.keyMode = mode })
}

// WithFIFO sets the value of the distlock.lock.fifo span attribute. By
// default it is what the decorated Locker reports through a FIFO() bool
// method, as *mutex.Mutex has, and false for a Locker without one (such as
// another decorator).
func WithFIFO(fifo bool) Option {
	return optionFunc(func(c *config) { c.fifo = &fifo })
}

// Middleware returns a decorator that records a span for every Lock,
// TryLock, Check, Extend and Unlock, the metrics listed in the package
// documentation, and the loss of leases.
func Middleware(opts ...Option) middleware.Middleware {
	c := config{}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.keyMode != KeyHashed && c.keyMode != KeyRaw {
		c.keyMode = KeyOmitted
	}
	ins := newInstruments(c)
	return func(inner mutex.Locker) mutex.Locker {
		l := &locker{inner: inner, ins: ins}
		if c.fifo != nil {
			l.fifo = *c.fifo
		} else if f, ok := inner.(interface{ FIFO() bool }); ok {
			l.fifo = f.FIFO()
		}
		return l
	}
}

// instruments is what every Locker made by one Middleware shares.
type instruments struct {
	tracer  trace.Tracer
	keyMode KeyMode

	wait       metric.Float64Histogram
	hold       metric.Float64Histogram
	acquired   metric.Int64Counter
	held       metric.Int64UpDownCounter
	lost       metric.Int64Counter
	extendFail metric.Int64Counter

	// Precomputed measurement options, so that recording allocates nothing.
	acqOpts    map[string]map[string]metric.MeasurementOption // op, outcome
	holdOpts   map[string]metric.MeasurementOption            // end
	extendOpts map[string]metric.MeasurementOption            // outcome
}

// Buckets in seconds, from 100µs (a Redis round trip) to a minute.
var durationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

func newInstruments(c config) *instruments {
	ins := &instruments{
		tracer: c.tp.Tracer(ScopeName,
			trace.WithInstrumentationVersion(Version)),
		keyMode: c.keyMode,
	}
	meter := c.mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	ins.wait, err = meter.Float64Histogram(MetricWaitDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of Lock and TryLock calls, from the call to its return."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	add(err)
	ins.hold, err = meter.Float64Histogram(MetricHoldDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Time leases were held, from the grant to their Unlock or loss."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	add(err)
	ins.acquired, err = meter.Int64Counter(MetricAcquisitions,
		metric.WithUnit("{acquisition}"),
		metric.WithDescription("Lock and TryLock calls, by outcome."))
	add(err)
	ins.held, err = meter.Int64UpDownCounter(MetricHeld,
		metric.WithUnit("{lease}"),
		metric.WithDescription("Leases currently held."))
	add(err)
	ins.lost, err = meter.Int64Counter(MetricLost,
		metric.WithUnit("{lease}"),
		metric.WithDescription("Leases that ended without Unlock: their validity ran out or another owner took a key."))
	add(err)
	ins.extendFail, err = meter.Int64Counter(MetricExtendFailures,
		metric.WithUnit("{failure}"),
		metric.WithDescription("Extend calls that failed, by outcome."))
	add(err)
	if len(errs) > 0 {
		otel.Handle(errors.Join(errs...))
	}

	ins.acqOpts = make(map[string]map[string]metric.MeasurementOption)
	for _, op := range []string{OperationLock, OperationTryLock} {
		m := make(map[string]metric.MeasurementOption)
		for _, oc := range []string{OutcomeObtained, OutcomeNotObtained, OutcomeCancelled, OutcomeTimeout, OutcomeError} {
			m[oc] = metric.WithAttributeSet(attribute.NewSet(
				AttrOperation.String(op), AttrOutcome.String(oc)))
		}
		ins.acqOpts[op] = m
	}
	ins.holdOpts = map[string]metric.MeasurementOption{
		EndUnlocked: metric.WithAttributeSet(attribute.NewSet(AttrEnd.String(EndUnlocked))),
		EndLost:     metric.WithAttributeSet(attribute.NewSet(AttrEnd.String(EndLost))),
	}
	ins.extendOpts = make(map[string]metric.MeasurementOption)
	for _, oc := range []string{OutcomeNotHeld, OutcomeReleased, OutcomeCancelled, OutcomeTimeout, OutcomeError} {
		ins.extendOpts[oc] = metric.WithAttributeSet(attribute.NewSet(AttrOutcome.String(oc)))
	}
	return ins
}

// locker is the decorated Locker.
type locker struct {
	inner mutex.Locker
	ins   *instruments
	fifo  bool
}

var _ mutex.Locker = (*locker)(nil)

// Lock records a distlock.Lock span covering the whole wait.
func (l *locker) Lock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	return l.acquire(ctx, OperationLock, spanLock, keys, false)
}

// TryLock records a distlock.TryLock span.
func (l *locker) TryLock(ctx context.Context, keys ...string) (mutex.Lease, error) {
	return l.acquire(ctx, OperationTryLock, spanTryLock, keys, true)
}

func (l *locker) acquire(ctx context.Context, op, name string, keys []string, try bool) (mutex.Lease, error) {
	ins := l.ins
	caller := trace.SpanFromContext(ctx)
	ctx, span := ins.tracer.Start(ctx, name, internalKind...)
	start := time.Now()
	var inner mutex.Lease
	var err error
	if try {
		inner, err = l.inner.TryLock(ctx, keys...)
	} else {
		inner, err = l.inner.Lock(ctx, keys...)
	}
	granted := time.Now()
	wait := granted.Sub(start)
	outcome := acquireOutcome(err)
	if err == nil && inner == nil {
		outcome = OutcomeError
		err = errNilLease
	}
	mopt := ins.acqOpts[op][outcome]
	ins.wait.Record(ctx, wait.Seconds(), mopt)
	ins.acquired.Add(ctx, 1, mopt)
	recording := span.IsRecording()
	if recording {
		attrs := make([]attribute.KeyValue, 0, 8)
		attrs = append(attrs,
			AttrOutcome.String(outcome),
			AttrWaitDuration.Float64(wait.Seconds()),
			AttrFIFO.Bool(l.fifo),
			AttrKeyCount.Int(len(keys)))
		attrs = ins.appendKeys(attrs, keys)
		if err == nil {
			attrs = append(attrs, AttrFence.Int64(inner.Fence()))
		} else {
			var noe *mutex.NotObtainedError
			if errors.As(err, &noe) && noe.Key != "" {
				attrs = ins.appendBlockingKey(attrs, noe.Key)
			}
		}
		span.SetAttributes(attrs...)
		if outcome == OutcomeError {
			ins.recordError(span, err)
		}
	}
	span.End()
	if err != nil {
		return nil, err
	}
	return ins.wrap(inner, caller, span.SpanContext(), recording, granted), nil
}

var errNilLease = errors.New("otellock: the decorated Locker returned neither a lease nor an error")

// Check records a distlock.Check span.
func (l *locker) Check(ctx context.Context, keys ...string) (mutex.Status, error) {
	ins := l.ins
	ctx, span := ins.tracer.Start(ctx, spanCheck, internalKind...)
	st, err := l.inner.Check(ctx, keys...)
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 4)
		attrs = append(attrs, AttrKeyCount.Int(len(keys)))
		attrs = ins.appendKeys(attrs, keys)
		if err == nil {
			attrs = append(attrs, AttrStatus.String(statusValue(st)))
		}
		span.SetAttributes(attrs...)
		if err != nil {
			ins.recordError(span, err)
		}
	}
	span.End()
	return st, err
}

func statusValue(s mutex.Status) string {
	switch s {
	case mutex.Available:
		return StatusAvailable
	case mutex.Locked:
		return StatusLocked
	case mutex.PartiallyLocked:
		return StatusPartiallyLocked
	}
	return s.String()
}

// contextOutcome returns OutcomeCancelled for an error wrapping
// context.Canceled, OutcomeTimeout for one wrapping
// context.DeadlineExceeded, and "" for any other.
func contextOutcome(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return OutcomeCancelled
	case errors.Is(err, context.DeadlineExceeded):
		return OutcomeTimeout
	}
	return ""
}

// isContextOutcome reports whether outcome says that the call's context
// ended: not a failure of the call.
func isContextOutcome(outcome string) bool {
	return outcome == OutcomeCancelled || outcome == OutcomeTimeout
}

// acquireOutcome classifies the error of a Lock or TryLock.
func acquireOutcome(err error) string {
	if err == nil {
		return OutcomeObtained
	}
	if oc := contextOutcome(err); oc != "" {
		return oc
	}
	if errors.Is(err, mutex.ErrNotObtained) {
		return OutcomeNotObtained
	}
	return OutcomeError
}

// leaseOutcome classifies the error of an Extend or Unlock.
func leaseOutcome(err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, mutex.ErrReleased):
		return OutcomeReleased
	case errors.Is(err, mutex.ErrNotHeld):
		return OutcomeNotHeld
	}
	if oc := contextOutcome(err); oc != "" {
		return oc
	}
	return OutcomeError
}
