package mutex

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher sends the script calls of a Mutex (acquire, release, extend and
// the FIFO scripts). While fewer than maxInFlight requests of the Mutex
// are under way, a call goes out at once, in its caller's goroutine,
// exactly as go-redis would send it. Beyond that, calls collect in the
// next batch, which goes out as one pipeline, on one connection and in
// one write, as soon as a request in flight returns. An idle Mutex so adds
// no latency to a call, and a busy one sends many calls per round trip
// instead of queueing them for the connections of the client's pool.
type batcher struct {
	client redis.UniversalClient
	// inFlightMax bounds the requests in flight; maxInFlight by default.
	inFlightMax int

	mu       sync.Mutex
	inFlight int
	queue    []*scriptCall
}

// maxInFlight is how many requests, single calls or batches, a Mutex has
// under way at once at most. More than one, so that a connection that
// stalls holds up only the calls sent on it, until their contexts end.
const maxInFlight = 8

// scriptCall is one script call waiting in, or sent in, a batch.
type scriptCall struct {
	ctx   context.Context
	args  []any         // EVALSHA or EVAL, and its arguments
	cmd   *redis.Cmd    // set before done is closed
	done  chan struct{} // closed when cmd has its reply; never for a dropped call
	state atomic.Int32
}

// The states of a scriptCall: waiting for a batch; taken into one, so
// possibly sent; given up before it was sent.
const (
	callQueued int32 = iota
	callTaken
	callDropped
)

// run sends the script call args (see script.evalArgs) and returns its
// command. If ctx ends while the call waits in a batch, run returns at
// once with ctx's error; sent reports then whether the batch may still
// send it (so that the caller treats the call's outcome as unknown).
func (b *batcher) run(ctx context.Context, args []any) (cmd *redis.Cmd, sent bool) {
	b.mu.Lock()
	if b.inFlight < b.inFlightMax {
		b.inFlight++
		b.mu.Unlock()
		cmd = scriptCmd(ctx, args)
		_ = b.client.Process(ctx, cmd)
		b.next()
		return cmd, false
	}
	c := &scriptCall{ctx: ctx, args: args, done: make(chan struct{})}
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.cmd, false
	case <-ctx.Done():
		cmd = redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		if c.state.CompareAndSwap(callQueued, callDropped) || c.state.Load() == callDropped {
			return cmd, false
		}
		return cmd, true
	}
}

// scriptCmd returns the command of the script call args.
func scriptCmd(ctx context.Context, args []any) *redis.Cmd {
	cmd := redis.NewCmd(ctx, args...)
	if n, _ := args[2].(int); n > 0 {
		cmd.SetFirstKeyPos(3)
	}
	return cmd
}

// next is called when a request in flight returned: it sends the calls
// that collected meanwhile, in a goroutine that lives while batches keep
// coming, or frees the request's place.
func (b *batcher) next() {
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.inFlight--
		b.mu.Unlock()
		return
	}
	batch := b.queue
	b.queue = nil
	b.mu.Unlock()
	go b.flush(batch)
}

func (b *batcher) flush(batch []*scriptCall) {
	for {
		b.sendBatch(batch)
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		batch = b.queue
		b.queue = nil
		b.mu.Unlock()
	}
}

// sendBatch sends the calls of batch whose callers still wait, as one
// pipeline. The pipeline runs under a context that ends when the last of
// the callers' deadlines passes, if every caller has one: a caller whose
// context ends does not stop the others' calls.
func (b *batcher) sendBatch(batch []*scriptCall) {
	live := batch[:0]
	var deadline time.Time
	bounded := true
	for _, c := range batch {
		// A call whose caller's context has ended is dropped, never sent:
		// the caller returns on its own.
		if c.ctx.Err() != nil {
			c.state.CompareAndSwap(callQueued, callDropped)
		}
		if !c.state.CompareAndSwap(callQueued, callTaken) {
			continue
		}
		live = append(live, c)
		if d, ok := c.ctx.Deadline(); !ok {
			bounded = false
		} else if d.After(deadline) {
			deadline = d
		}
	}
	if len(live) == 0 {
		return
	}
	ctx := context.WithoutCancel(live[0].ctx)
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	if len(live) == 1 {
		c := live[0]
		c.cmd = scriptCmd(ctx, c.args)
		_ = b.client.Process(ctx, c.cmd)
		close(c.done)
		return
	}
	pipe := b.client.Pipeline()
	for _, c := range live {
		c.cmd = scriptCmd(ctx, c.args)
		_ = pipe.Process(ctx, c.cmd)
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range live {
		close(c.done)
	}
}
