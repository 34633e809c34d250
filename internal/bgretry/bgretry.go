package bgretry

import (
	"context"
	"time"

	"github.com/jpillora/backoff"
)

// Bounds of the retries of a background request.
const (
	// AttemptTimeout bounds each attempt but the first.
	AttemptTimeout = 5 * time.Second
	// ClosedAttemptTimeout bounds the first attempt, which runs to its end
	// even when ctx ends meanwhile, and the one attempt made after Close.
	ClosedAttemptTimeout = time.Second
	// MinDelay and MaxDelay bound the pause between failures, which
	// doubles from one to the other.
	MinDelay = 10 * time.Millisecond
	MaxDelay = time.Second
)

// Until calls req until it returns nil or ctx ends. The first attempt gets
// ClosedAttemptTimeout whether or not ctx ends meanwhile, each later one
// AttemptTimeout under ctx; between failures it pauses from MinDelay,
// doubling up to MaxDelay. An error reply, too, means that the request did
// not run (Redis refused it or was not reached), so it is tried again.
func Until(ctx context.Context, req func(ctx context.Context) error) {
	b := backoff.Backoff{Min: MinDelay, Max: MaxDelay, Factor: 2}
	for first := true; ; first = false {
		parent, timeout := ctx, AttemptTimeout
		if first {
			parent, timeout = context.WithoutCancel(ctx), ClosedAttemptTimeout
		}
		actx, cancel := context.WithTimeout(parent, timeout)
		err := req(actx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(b.Duration()):
		}
	}
}

// Once makes the one attempt of req that is left after Close, bounded by
// ClosedAttemptTimeout.
func Once(req func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), ClosedAttemptTimeout)
	defer cancel()
	_ = req(ctx)
}
