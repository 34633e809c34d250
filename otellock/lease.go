package otellock

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/distlock/distlock/mutex"
)

// lease decorates a lease of the inner Locker. The optional methods of the
// inner lease, Deadline and AutoExtended, are reached through Unwrap.
type lease struct {
	inner   mutex.Lease
	ins     *instruments
	caller  trace.Span        // the span current when Lock was called
	lockSC  trace.SpanContext // the Lock or TryLock span
	granted time.Time
	metered bool        // held was incremented: finish must record the end
	traced  bool        // a loss is reported to the caller span or a LeaseLost span
	watch   *time.Timer // starts the watcher; nil if nothing observes the end
	mu      sync.Mutex  // held while the end is recorded
	ended   bool        // the end was recorded
}

var (
	_ mutex.Lease     = (*lease)(nil)
	_ mutex.Unwrapper = (*lease)(nil)
)

// watchDelay is how long after the grant a goroutine starts watching a
// lease for its end. A loss earlier than that is reported at that time.
const watchDelay = 10 * time.Millisecond

// wrap decorates inner, granted at granted by the call that the span sc
// recorded (recording tells whether it was).
// If anything observes the end of the lease, a goroutine started
// watchDelay after the grant waits for inner.Done(); it ends with the lease
// (Unlock, loss or expiry).
func (ins *instruments) wrap(inner mutex.Lease, caller trace.Span, sc trace.SpanContext, recording bool, granted time.Time) mutex.Lease {
	ctx := context.Background()
	l := &lease{
		inner:   inner,
		ins:     ins,
		caller:  caller,
		lockSC:  sc,
		granted: granted,
		metered: ins.held.Enabled(ctx) || ins.hold.Enabled(ctx) || ins.lost.Enabled(ctx),
		traced:  recording || caller.IsRecording(),
	}
	if l.metered {
		ins.held.Add(ctx, 1)
	}
	if l.metered || l.traced {
		// Most leases are released sooner than watchDelay: Unlock stops the
		// timer and no goroutine is ever started for them.
		l.watch = time.AfterFunc(watchDelay, func() {
			<-inner.Done()
			l.finish()
		})
	}
	return l
}

// Unwrap returns the decorated lease, through which mutex.Deadline and
// mutex.IsAutoExtended find what the inner leases report.
func (l *lease) Unwrap() mutex.Lease { return l.inner }

func (l *lease) Keys() []string           { return l.inner.Keys() }
func (l *lease) Token() string            { return l.inner.Token() }
func (l *lease) Fence() int64             { return l.inner.Fence() }
func (l *lease) FenceOf(key string) int64 { return l.inner.FenceOf(key) }
func (l *lease) Done() <-chan struct{}    { return l.inner.Done() }
func (l *lease) Err() error               { return l.inner.Err() }

// Extend records a distlock.Extend span, linked to the span that obtained
// the lease, and counts failures.
func (l *lease) Extend(ctx context.Context) error {
	ins := l.ins
	ctx, span := ins.tracer.Start(ctx, spanExtend, l.spanOpts()...)
	err := l.inner.Extend(ctx)
	outcome := leaseOutcome(err)
	if err != nil {
		ins.extendFail.Add(ctx, 1, ins.extendOpts[outcome])
	}
	if span.IsRecording() {
		span.SetAttributes(l.attrs(outcome)...)
		if err != nil && !isContextOutcome(outcome) {
			ins.recordError(span, err)
		}
	}
	span.End()
	l.finishAndStop()
	return err
}

// Unlock records a distlock.Unlock span, linked to the span that obtained
// the lease.
func (l *lease) Unlock(ctx context.Context) error {
	ins := l.ins
	ctx, span := ins.tracer.Start(ctx, spanUnlock, l.spanOpts()...)
	err := l.inner.Unlock(ctx)
	outcome := leaseOutcome(err)
	if span.IsRecording() {
		attrs := append(l.attrs(outcome),
			AttrHoldDuration.Float64(time.Since(l.granted).Seconds()))
		span.SetAttributes(attrs...)
		if err != nil && !isContextOutcome(outcome) {
			ins.recordError(span, err)
		}
	}
	span.End()
	l.finishAndStop()
	return err
}

func (l *lease) spanOpts() []trace.SpanStartOption {
	if l.lockSC.IsSampled() {
		return []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithLinks(trace.Link{SpanContext: l.lockSC}),
		}
	}
	return internalKind
}

var internalKind = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}

func (l *lease) attrs(outcome string) []attribute.KeyValue {
	keys := l.inner.Keys()
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs,
		AttrOutcome.String(outcome),
		AttrKeyCount.Int(len(keys)),
		AttrFence.Int64(l.inner.Fence()))
	return l.ins.appendKeys(attrs, keys)
}

// finishAndStop is finish for the lease's own methods: once the lease has
// ended, the watcher is not needed any more.
func (l *lease) finishAndStop() {
	l.finish()
	if l.watch != nil && l.inner.Err() != nil {
		l.watch.Stop()
	}
}

// finish records the end of the lease once it has ended: the hold duration
// and the held count, and for a loss the lost count and the loss record.
// When it returns, the end has been recorded, by this call or another.
func (l *lease) finish() {
	err := l.inner.Err()
	if err == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	l.ended = true
	hold := time.Since(l.granted).Seconds()
	lost := errors.Is(err, mutex.ErrNotHeld)
	if lost && l.traced {
		l.recordLoss(err, hold)
	}
	ins := l.ins
	ctx := context.Background()
	if l.metered {
		ins.held.Add(ctx, -1)
		if lost {
			ins.hold.Record(ctx, hold, ins.holdOpts[EndLost])
			ins.lost.Add(ctx, 1)
		} else {
			ins.hold.Record(ctx, hold, ins.holdOpts[EndUnlocked])
		}
	}
}

// recordLoss adds a distlock.lease.lost event to the caller's span if it is
// still recording, or else records a distlock.LeaseLost span, child of the
// span that obtained the lease.
func (l *lease) recordLoss(err error, hold float64) {
	ins := l.ins
	attrs := append(l.attrs(OutcomeNotHeld),
		AttrHoldDuration.Float64(hold),
		AttrEnd.String(EndLost))
	if l.caller.IsRecording() {
		l.caller.AddEvent(eventLost, trace.WithAttributes(attrs...))
		return
	}
	ctx := trace.ContextWithSpanContext(context.Background(), l.lockSC)
	_, span := ins.tracer.Start(ctx, spanLeaseLost,
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrs...))
	ins.recordError(span, err)
	span.End()
}

// recordError records err on span. Unless keys are recorded raw, the
// message of an error of the mutex package is replaced by its sentinel's,
// since it may quote keys.
func (ins *instruments) recordError(span trace.Span, err error) {
	if ins.keyMode != KeyRaw {
		for _, s := range sentinels {
			if errors.Is(err, s) {
				err = s
				break
			}
		}
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

var sentinels = []error{
	mutex.ErrInvalid, mutex.ErrReentrant, mutex.ErrClosed,
	mutex.ErrNotHeld, mutex.ErrReleased, mutex.ErrNotObtained,
}
