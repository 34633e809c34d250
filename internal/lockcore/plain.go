package lockcore

import (
	"context"
	"slices"
	"time"

	"github.com/distlock/distlock/mutex"
)

// plainState holds the local waiters of plain waiting: per Redis key, the
// waiters whose last attempt found that key in the way, in the order they
// got there. A release announced on a key's channel wakes the first of
// them only; a grant that leaves permits wakes the next. So a release
// costs one attempt per Core, however many goroutines wait. Guarded by
// Core.mu.
type plainState struct {
	queues map[string]*plainQueue
}

// plainQueue holds the waiters blocked on one Redis key. It exists while
// it has waiters, and is subscribed to the key's channel meanwhile.
type plainQueue struct {
	key     string
	waiters []*plainWaiter
	sub     *Subscription
}

type plainWaiter struct {
	q    *plainQueue
	wake chan struct{} // buffered: a pending reason to attempt
}

func (w *plainWaiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// first returns the first waiter of q, or nil.
func (q *plainQueue) first() *plainWaiter {
	if q == nil || len(q.waiters) == 0 {
		return nil
	}
	return q.waiters[0]
}

// moveLocked puts w at the end of the queue of rkey, leaving the queue it
// was in. A waiter that becomes the first of a queue that existed already
// is signalled, as a release may have come while its attempt was in
// flight; the first waiter of a new queue is signalled by the
// confirmation of its subscription. c.mu must be held.
func (c *Core) moveLocked(w *plainWaiter, rkey string) {
	if w.q != nil && w.q.key == rkey {
		return
	}
	// The key w leaves may have a permit that w could not use.
	c.leaveQueueLocked(w, true)
	q := c.plain.queues[rkey]
	if q == nil {
		q = &plainQueue{key: rkey}
		c.plain.queues[rkey] = q
		q.sub = c.ps.Subscribe(rkey, func(string, bool) { c.announced(rkey) })
		q.waiters = append(q.waiters, w)
		w.q = q
		return
	}
	q.waiters = append(q.waiters, w)
	w.q = q
	if q.first() == w {
		w.signal()
	}
}

// leaveQueueLocked removes w from its queue, and with pass, passes the
// turn on if it was first: the release it was woken for may still be
// there. c.mu must be held.
func (c *Core) leaveQueueLocked(w *plainWaiter, pass bool) {
	q := w.q
	if q == nil {
		return
	}
	w.q = nil
	wasFirst := q.first() == w
	if i := slices.Index(q.waiters, w); i >= 0 {
		q.waiters = slices.Delete(q.waiters, i, i+1)
	}
	if len(q.waiters) == 0 {
		delete(c.plain.queues, q.key)
		q.sub.Unsubscribe()
		return
	}
	if wasFirst && pass {
		q.waiters[0].signal()
	}
}

// announced wakes the first waiter for rkey, after a release announcement
// or a (re)confirmed subscription.
func (c *Core) announced(rkey string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.plain.queues[rkey].first(); w != nil {
		w.signal()
	}
}

// lockPlain waits for the keys: it attempts when it is the first waiter
// for the key that was in its way and that key is announced released, or
// when that key's first holder expires.
func (c *Core) lockPlain(ctx context.Context, kind string, keys, rkeys []string) (mutex.Lease, error) {
	var last *mutex.NotObtainedError
	w := &plainWaiter{wake: make(chan struct{}, 1)}
	var free []int64
	acquired := false
	defer func() { c.plainDone(w, rkeys, acquired, free) }()
	timer := time.NewTimer(c.ttl)
	defer timer.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return nil, notObtained(last, ctx.Err())
			case <-c.stop:
				return nil, mutex.ErrClosed
			case <-w.wake:
			case <-timer.C:
			}
			c.mu.Lock()
			closed, turn := c.closed, w.q.first() == w
			c.mu.Unlock()
			if closed {
				return nil, mutex.ErrClosed
			}
			if !turn {
				resetTimer(timer, c.ttl)
				continue
			}
		}
		token, err := c.newToken(kind)
		if err != nil {
			return nil, err
		}
		l, o, err := c.joinOutcome(ctx, keys, rkeys, token, true)
		if err != nil {
			return nil, ended(ctx, last, err)
		}
		if l != nil {
			acquired, free = true, o.free
			return l, nil
		}
		if o.granted {
			// The grant came too late to use: try again.
			w.signal()
			continue
		}
		last = blockedBy(keys, o)
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, mutex.ErrClosed
		}
		c.moveLocked(w, rkeys[o.index-1])
		c.mu.Unlock()
		d := o.retry
		if d <= 0 {
			d = c.ttl
		}
		resetTimer(timer, d+time.Millisecond)
	}
}

// plainDone removes a waiter that returned. One that took its keys wakes
// the next waiter of each key that has permits left, and passes on a wake
// that came while its attempt was in flight.
func (c *Core) plainDone(w *plainWaiter, rkeys []string, acquired bool, free []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pending := false
	select {
	case <-w.wake:
		pending = true
	default:
	}
	c.leaveQueueLocked(w, pending || !acquired)
	if !acquired {
		return
	}
	for i, k := range rkeys {
		if i < len(free) && free[i] > 0 {
			if x := c.plain.queues[k].first(); x != nil {
				x.signal()
			}
		}
	}
}
