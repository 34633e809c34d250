package mutex

import (
	"context"
	"strings"
	"time"
)

// keyQueue holds the local waiters of one Redis key in arrival order. It
// exists while it has waiters, and the Mutex is subscribed to the key's
// release channel while it exists.
type keyQueue struct {
	key     string
	waiters []*waiter
	// subscribed is closed once Redis confirmed the subscription.
	subscribed chan struct{}
}

// waiter is one Lock call waiting in the queues of its keys. It may try
// Redis only while it is at the head of every one of them, so that one
// release costs one attempt per Mutex, and waiters of one Mutex are served
// in arrival order.
type waiter struct {
	queues []*keyQueue
	wake   chan struct{} // buffered: a pending reason to attempt
	hint   chan time.Duration

	// FIFO mode, guarded by Mutex.mu.
	token    string // the waiter's owner token, under which it is queued
	enqueued bool   // queued in Redis
	renewed  bool   // its deadline was renewed at least once
	// grantFence is set when a release handed the lock to the waiter.
	grantFence string
	// lowerBound is the start of the waiter's last request that Redis
	// ran while the waiter was still queued: any grant comes after it.
	lowerBound time.Time
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *waiter) runnable() bool {
	for _, q := range w.queues {
		if q.waiters[0] != w {
			return false
		}
	}
	return true
}

// queuedLocally checks that a Lock may start, and reports whether waiters
// of this Mutex already queue for one of rkeys.
func (m *Mutex) queuedLocally(ctx context.Context, rkeys []string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, &NotObtainedError{Cause: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, ErrClosed
	}
	for _, k := range rkeys {
		if m.queues[k] != nil {
			return true, nil
		}
	}
	return false, nil
}

// wait implements Lock.
func (m *Mutex) wait(ctx context.Context, keys, rkeys []string) (Lease, error) {
	queued, err := m.queuedLocally(ctx, rkeys)
	if err != nil {
		return nil, err
	}
	var last *NotObtainedError
	if !queued {
		// Nobody of this Mutex waits for these keys: try at once.
		l, blocked, err := m.attempt(ctx, keys, rkeys)
		if err != nil || l != nil {
			return leaseOrNil(l), err
		}
		last = blocked
	}

	w, err := m.enqueue(rkeys, "")
	if err != nil {
		return nil, err
	}
	acquired := false
	defer func() { m.dequeue(w, acquired) }()

	// Attempt again once the subscriptions are confirmed, so that a release
	// between the first attempt and the subscription is not missed.
	for _, q := range w.queues {
		select {
		case <-q.subscribed:
		case <-ctx.Done():
			return nil, notObtained(last, ctx.Err())
		case <-time.After(m.ttl):
			// The pub/sub connection is slow or down: carry on, the
			// timer below still re-checks.
		}
	}
	w.signal()

	timer := time.NewTimer(m.ttl)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, notObtained(last, ctx.Err())
		case <-w.wake:
		case d := <-w.hint:
			// A local waiter ahead of us took the keys: nothing to try
			// until it releases them, or until their TTL.
			resetTimer(timer, d)
			continue
		case <-timer.C:
		}
		m.mu.Lock()
		closed, run := m.closed, w.runnable()
		m.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if !run {
			continue
		}
		l, blocked, err := m.attempt(ctx, keys, rkeys)
		if err != nil {
			return nil, err
		}
		if l != nil {
			acquired = true
			return l, nil
		}
		last = blocked
		// Re-check when the holder's TTL runs out at the latest, in case
		// its release announcement is lost.
		d := blocked.RetryAfter
		if d <= 0 {
			d = m.ttl
		}
		resetTimer(timer, d+time.Millisecond)
	}
}

func notObtained(last *NotObtainedError, cause error) error {
	e := &NotObtainedError{Cause: cause}
	if last != nil {
		e.Key, e.RetryAfter = last.Key, last.RetryAfter
	}
	return e
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// enqueue adds a waiter to the local queues of rkeys, creating the queues
// that do not exist yet. Without FIFO, a new queue subscribes to its key's
// release channel; in FIFO mode, a waiter has a token and the Mutex listens
// on its wake channel instead.
func (m *Mutex) enqueue(rkeys []string, token string) (*waiter, error) {
	w := &waiter{
		queues: make([]*keyQueue, len(rkeys)),
		wake:   make(chan struct{}, 1),
		hint:   make(chan time.Duration, 1),
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var fresh []string
	for i, k := range rkeys {
		q := m.queues[k]
		if q == nil {
			q = &keyQueue{key: k, subscribed: make(chan struct{})}
			m.queues[k] = q
			fresh = append(fresh, k)
		}
		q.waiters = append(q.waiters, w)
		w.queues[i] = q
	}
	if m.fifo {
		w.token = token
		m.tokens[token] = w
		fresh = nil
		if !m.wakeSubscribed {
			m.wakeSubscribed = true
			fresh = []string{m.wakeChannel}
		}
	}
	if len(fresh) > 0 {
		if m.sub == nil {
			m.sub = newSubscriber(m)
		}
		m.sub.subscribe(fresh)
	}
	return w, nil
}

// dequeue removes a waiter from its queues. Waiters that it leaves at the
// head of all their queues are told what to do: attempt if w gave up, or
// wait for the TTL (or a release) if w took the keys.
func (m *Mutex) dequeue(w *waiter, acquired bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.token != "" {
		delete(m.tokens, w.token)
	}
	var gone []string
	for _, q := range w.queues {
		for i, x := range q.waiters {
			if x == w {
				q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
				break
			}
		}
		if len(q.waiters) == 0 {
			delete(m.queues, q.key)
			if !m.fifo {
				gone = append(gone, q.key)
			}
		}
	}
	for _, q := range w.queues {
		if len(q.waiters) == 0 || m.fifo {
			continue
		}
		h := q.waiters[0]
		if !h.runnable() {
			continue
		}
		if acquired {
			select {
			case h.hint <- m.ttl + time.Millisecond:
			default:
			}
		} else {
			h.signal()
		}
	}
	if len(gone) > 0 && m.sub != nil {
		m.sub.unsubscribe(gone)
	}
}

// released is called for a release announcement on the channel of key, or
// with an empty payload when a subscription was renewed after a reconnect.
// In FIFO mode the payload is the token of the waiter to wake. Otherwise it
// wakes the waiter at the head of the key's local queue if it may try.
func (m *Mutex) released(key, payload string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fifo {
		if key != m.wakeChannel {
			return
		}
		if payload == "" {
			// Wake-ups may have been lost: every waiter checks.
			for _, w := range m.tokens {
				w.signal()
			}
			return
		}
		token, fence, _ := strings.Cut(payload, " ")
		if w := m.tokens[token]; w != nil {
			if fence != "" {
				w.grantFence = fence
			}
			w.signal()
		}
		return
	}
	q := m.queues[key]
	if q == nil {
		return
	}
	if h := q.waiters[0]; h.runnable() {
		h.signal()
	}
}
