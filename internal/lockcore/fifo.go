package lockcore

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/mutex"
)

// fifoState holds the local waiters of queued waiting. Guarded by Core.mu.
type fifoState struct {
	waiters  map[string]*fifoWaiter // by current token
	sub      *Subscription          // the wake channel, from the first wait on
	renewing bool                   // the renewal loop runs
}

// fifoWaiter is one Lock call in queued mode. Its token names one queue
// entry: a waiter whose entry was dropped (its renewals could not reach
// Redis in time) joins again under a new token.
type fifoWaiter struct {
	rkeys    []string
	token    string
	enqueued bool // the renewals keep its entry
	lost     bool // a renewal found its entry gone
	wake     chan struct{}
}

func (w *fifoWaiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// woken handles a message on the wake channel: the tokens of waiters that
// may go now. A (re)confirmed subscription wakes every waiter, as a message
// may have been missed.
func (c *Core) woken(payload string, confirmed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if confirmed {
		for _, w := range c.fifo.waiters {
			w.signal()
		}
		return
	}
	for _, t := range strings.Fields(payload) {
		if w := c.fifo.waiters[t]; w != nil {
			w.signal()
		}
	}
}

// register makes token the current token of w. c.mu must be held.
func (c *Core) registerLocked(w *fifoWaiter, token string) {
	if w.token != "" {
		delete(c.fifo.waiters, w.token)
	}
	w.token, w.enqueued, w.lost = token, false, false
	c.fifo.waiters[token] = w
	if c.fifo.sub == nil {
		c.fifo.sub = c.ps.Subscribe(c.wakeBase+c.id, c.woken)
	}
}

func (c *Core) forget(w *fifoWaiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.fifo.waiters, w.token)
}

// lockQueued joins the queue of every key and waits to be woken at their
// head; it claims the keys when woken, and when the first holder in its
// way expires.
func (c *Core) lockQueued(ctx context.Context, kind string, keys, rkeys []string) (mutex.Lease, error) {
	var last *mutex.NotObtainedError
	w := &fifoWaiter{rkeys: rkeys, wake: make(chan struct{}, 1)}
	timer := time.NewTimer(c.ttl)
	defer timer.Stop()
	for {
		token, err := c.newToken(kind)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, mutex.ErrClosed
		}
		c.registerLocked(w, token)
		c.mu.Unlock()
		l, o, err := c.joinOutcome(ctx, keys, rkeys, token, false)
		if err != nil || l != nil || o.granted {
			c.forget(w)
			if err != nil {
				return nil, ended(ctx, last, err)
			}
			if l != nil {
				return l, nil
			}
			continue // granted too late to use: join again
		}
		last = blockedBy(keys, o)
		c.mu.Lock()
		w.enqueued = true
		c.startRenewingLocked()
		c.mu.Unlock()
		resetTimer(timer, c.waitFor(o))
		got, err := c.waitQueued(ctx, timer, w, keys, rkeys, &last)
		if got != nil || err != nil {
			return got, err
		}
	}
}

// waitQueued waits for w's turn and claims the keys. It returns nothing at
// all when w must join again.
func (c *Core) waitQueued(ctx context.Context, timer *time.Timer, w *fifoWaiter, keys, rkeys []string, last **mutex.NotObtainedError) (mutex.Lease, error) {
	token := w.token
	for {
		select {
		case <-ctx.Done():
			c.giveUp(w, rkeys)
			return nil, notObtained(*last, ctx.Err())
		case <-c.stop:
			c.giveUp(w, rkeys)
			return nil, mutex.ErrClosed
		case <-w.wake:
		case <-timer.C:
		}
		c.mu.Lock()
		lost := w.lost
		c.mu.Unlock()
		if lost {
			// Its entry of some key is gone, but those of its other keys
			// may be left: take them out before joining again.
			c.giveUp(w, rkeys)
			return nil, nil
		}
		start := time.Now()
		cmd, _ := run(ctx, c.client, claimScript, resourceKeys(rkeys), token, c.mode, c.ttlMS, c.wakeBase)
		res, err := cmd.Slice()
		if err != nil {
			c.giveUp(w, rkeys)
			return nil, ended(ctx, *last, err)
		}
		o, err := decode(res, len(rkeys))
		if err != nil {
			c.giveUp(w, rkeys)
			return nil, ended(ctx, *last, err)
		}
		switch {
		case o.granted:
			c.forget(w)
			l, err := c.newLease(keys, rkeys, token, o.fence, start)
			if err != nil || l != nil {
				return leaseOrNil(l), err
			}
			return nil, nil // granted too late to use: join again
		case o.lost:
			c.giveUp(w, rkeys)
			return nil, nil
		}
		*last = blockedBy(keys, o)
		resetTimer(timer, c.waitFor(o))
	}
}

func leaseOrNil(l *lease) mutex.Lease {
	if l == nil {
		return nil
	}
	return l
}

// waitFor returns how long a queued waiter waits, unless woken, before it
// claims again: until the first holder in its way expires, or a TTL when
// waiters are in its way (their progress wakes it).
func (c *Core) waitFor(o outcome) time.Duration {
	if o.retry > 0 {
		return o.retry + time.Millisecond
	}
	return max(c.ttl, Liveness)
}

// giveUp takes w out of its queues at once, with one request of at most a
// second, or in the background if that fails.
func (c *Core) giveUp(w *fifoWaiter, rkeys []string) {
	c.forget(w)
	ctx, cancel := context.WithTimeout(context.Background(), closedAttemptTimeout)
	defer cancel()
	keys := append(resourceKeys(rkeys), markerKey(rkeys[0], w.token))
	cmd, _ := run(ctx, c.client, leaveScript, keys, w.token, c.mode, c.wakeBase, "0", c.plainFlag())
	if cmd.Err() != nil {
		c.leaveInBackground(rkeys, w.token)
	}
}

// startRenewingLocked starts the renewal loop unless it runs. c.mu must be
// held.
func (c *Core) startRenewingLocked() {
	if c.fifo.renewing {
		return
	}
	if c.goLocked(c.renew) {
		c.fifo.renewing = true
	}
}

// renew refreshes, every Liveness/3, the queue entries of this Core's
// waiters, one script per key in one pipeline; the same script wakes the
// waiters that may go, which recovers from lost wake-ups and crashed
// holders. It exits when no waiter is queued.
func (c *Core) renew(ctx context.Context) {
	t := time.NewTicker(Liveness / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.mu.Lock()
			c.fifo.renewing = false
			c.mu.Unlock()
			return
		case <-t.C:
		}
		c.mu.Lock()
		byKey := make(map[string][]any)
		for token, w := range c.fifo.waiters {
			if !w.enqueued {
				continue
			}
			for _, k := range w.rkeys {
				byKey[k] = append(byKey[k], token)
			}
		}
		if len(byKey) == 0 {
			c.fifo.renewing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.refresh(ctx, byKey)
	}
}

// refresh runs the refresh script for each key with the tokens of its
// waiters, and marks the waiters whose entries are gone.
func (c *Core) refresh(ctx context.Context, byKey map[string][]any) {
	rctx, cancel := context.WithTimeout(ctx, Liveness/3)
	defer cancel()
	pipe := c.client.Pipeline()
	cmds := make([]*redis.Cmd, 0, len(byKey))
	keys := make([]string, 0, len(byKey))
	for k, tokens := range byKey {
		args := append([]any{c.mode, livenessMS, c.wakeBase}, tokens...)
		cmds = append(cmds, refreshScript.EvalSha(rctx, pipe, resourceKeys([]string{k}), args...))
		keys = append(keys, k)
	}
	_, _ = pipe.Exec(rctx)
	var lost []string
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			args := append([]any{c.mode, livenessMS, c.wakeBase}, byKey[keys[i]]...)
			cmd = refreshScript.Run(rctx, c.client, resourceKeys([]string{keys[i]}), args...)
		}
		gone, err := cmd.StringSlice()
		if err == nil {
			lost = append(lost, gone...)
		}
	}
	if len(lost) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range lost {
		if w := c.fifo.waiters[t]; w != nil && w.enqueued {
			w.lost = true
			w.signal()
		}
	}
}
