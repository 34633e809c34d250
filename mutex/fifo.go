package mutex

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// FIFOLiveness bounds how long a FIFO queue entry outlives its waiter:
	// a waiter whose process died or lost its connection is dropped from
	// the queue at most this long after its last renewal.
	FIFOLiveness = 1200 * time.Millisecond
	// fifoRenewEvery is how often a Mutex renews the queue entries of its
	// FIFO waiters, and checks that each queue with a free lock is moving.
	fifoRenewEvery = FIFOLiveness / 3
)

// fifoLivenessMS is also how long a lock handed to the head of a queue by a
// release lasts until the head confirms it: a head that died in the
// meantime holds up the queue no longer than a dead waiter would.
var fifoLivenessMS = strconv.FormatInt(FIFOLiveness.Milliseconds(), 10)
var fifoQueueTTLMS = strconv.FormatInt(2*FIFOLiveness.Milliseconds(), 10)

// queueKey and deadlineKey name the FIFO queue of a lock key and the set of
// its waiters' deadlines; they share the lock key's hash tag.
func queueKey(lockKey string) string    { return lockKey + ":q" }
func deadlineKey(lockKey string) string { return lockKey + ":d" }

// fifoKeys returns the lock, queue and deadline keys of each lock key.
func fifoKeys(rkeys []string) []string {
	out := make([]string, 0, 3*len(rkeys))
	for _, k := range rkeys {
		out = append(out, k, queueKey(k), deadlineKey(k))
	}
	return out
}

// release runs the release script of the Mutex's mode for l.
func (m *Mutex) release(ctx context.Context, l *lease) (int, error) {
	// The server clock has surely passed the fence of a lease granted more
	// than a couple of milliseconds ago; otherwise the script makes sure.
	young := "0"
	if time.Since(l.seen) < 2*time.Millisecond {
		young = "1"
	}
	if !m.fifo {
		return releaseScript.Run(ctx, m.client, l.rkeys, l.value, l.fence, young).Int()
	}
	keys := make([]string, 0, 2*len(l.rkeys))
	for _, k := range l.rkeys {
		keys = append(keys, k, queueKey(k))
	}
	return fifoReleaseScript.Run(ctx, m.client, keys, l.value, l.fence, young, m.wakeBase, fifoLivenessMS).Int()
}

// checkFIFO counts the resources that are held or queued for.
func (m *Mutex) checkFIFO(ctx context.Context, rkeys []string) (int64, error) {
	pipe := m.client.Pipeline()
	cmds := make([]*redis.IntCmd, len(rkeys))
	for i, k := range rkeys {
		cmds[i] = pipe.Exists(ctx, k, queueKey(k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	var n int64
	for _, c := range cmds {
		if c.Val() > 0 {
			n++
		}
	}
	return n, nil
}

// fifoLock takes the resources if nobody holds or waits for any of them;
// otherwise, unless try is set, it queues token for each of them.
func (m *Mutex) fifoLock(ctx context.Context, keys, rkeys []string, token string, try bool) (*lease, *NotObtainedError, error) {
	if token == "" {
		var err error
		if token, err = m.newToken(); err != nil {
			return nil, nil, err
		}
	}
	onlyTry := "0"
	if try {
		onlyTry = "1"
	}
	start := time.Now()
	res, err := fifoLockScript.Run(ctx, m.client, fifoKeys(rkeys), token, m.ttlMS, fifoQueueTTLMS, onlyTry).Slice()
	if err != nil {
		m.leave(rkeys, token)
		return nil, nil, fmt.Errorf("mutex: acquire: %w", err)
	}
	return m.grantOrBlocked(res, keys, rkeys, token, start)
}

// fifoClaim takes the resources for a queued waiter at the head of their
// queues. lost reports that the waiter is no longer queued.
func (m *Mutex) fifoClaim(ctx context.Context, keys, rkeys []string, token string) (l *lease, lost bool, err error) {
	start := time.Now()
	res, err := fifoClaimScript.Run(ctx, m.client, fifoKeys(rkeys), token, m.ttlMS).Slice()
	if err != nil {
		m.leave(rkeys, token)
		return nil, false, fmt.Errorf("mutex: acquire: %w", err)
	}
	if code, _ := res[0].(int64); code == -1 {
		return nil, true, nil
	}
	l, _, err = m.grantOrBlocked(res, keys, rkeys, token, start)
	return l, false, err
}

// grantOrBlocked decodes the {1, fence} or {0, index, pttl} reply of an
// acquire script.
func (m *Mutex) grantOrBlocked(res []any, keys, rkeys []string, token string, start time.Time) (*lease, *NotObtainedError, error) {
	if len(res) < 2 {
		return nil, nil, fmt.Errorf("mutex: acquire: unexpected reply %v", res)
	}
	if ok, _ := res[0].(int64); ok == 1 {
		fenceStr, _ := res[1].(string)
		fence, err := strconv.ParseInt(fenceStr, 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("mutex: acquire: bad fence %q", fenceStr)
		}
		return m.newLease(keys, rkeys, token, fenceStr, fence, start), nil, nil
	}
	blocked := &NotObtainedError{}
	if idx, _ := res[1].(int64); idx >= 1 && int(idx) <= len(keys) {
		blocked.Key = keys[idx-1]
	}
	if len(res) > 2 {
		if pttl, _ := res[2].(int64); pttl > 0 {
			blocked.RetryAfter = time.Duration(pttl) * time.Millisecond
		}
	}
	return nil, blocked, nil
}

// leave removes token from the queues of rkeys in the background, and
// releases any key it holds after all.
func (m *Mutex) leave(rkeys []string, token string) {
	m.background(5*time.Second, func(ctx context.Context) {
		_ = fifoLeaveScript.Run(ctx, m.client, fifoKeys(rkeys), token, m.wakeBase).Err()
	})
}

// waitFIFO implements Lock in FIFO mode. Every call joins the Redis queue
// of each of its keys under its own token; a release publishes the token of
// the head of the queue on the wake channel of the head's Mutex, so exactly
// that waiter, and no other process, wakes.
func (m *Mutex) waitFIFO(ctx context.Context, keys, rkeys []string) (Lease, error) {
	queued, err := m.queuedLocally(ctx, rkeys)
	if err != nil {
		return nil, err
	}
	// The kind after the Mutex id tells a release whether it may hand the
	// lock straight to this waiter: only a waiter for one key ("s").
	kind := "m."
	if len(rkeys) == 1 {
		kind = "s."
	}
	token, err := m.newToken()
	if err != nil {
		return nil, err
	}
	token = m.id + "." + kind + token[len(m.id)+1:]
	var last *NotObtainedError
	if !queued {
		// Nobody of this Mutex waits for these keys: try before
		// subscribing, which an uncontended lock does not need.
		l, blocked, err := m.fifoLock(ctx, keys, rkeys, token, true)
		if err != nil || l != nil {
			return leaseOrNil(l), err
		}
		last = blocked
	}

	// Listen for our token before joining the queue, so that no wake-up
	// can be missed.
	w, err := m.enqueue(rkeys, token)
	if err != nil {
		return nil, err
	}
	defer m.dequeue(w, false)
	select {
	case <-m.wakeReady:
	case <-ctx.Done():
		return nil, notObtained(last, ctx.Err())
	case <-time.After(m.ttl):
		// The pub/sub connection is slow or down: the renewal loop still
		// wakes the head of a queue whose lock is free.
	}

	join := func() (*lease, error) {
		m.mu.Lock()
		w.lowerBound = time.Now()
		m.mu.Unlock()
		l, blocked, err := m.fifoLock(ctx, keys, rkeys, token, false)
		if err != nil || l != nil {
			return l, err
		}
		last = blocked
		m.mu.Lock()
		w.enqueued = true
		m.startRenewLocked()
		m.mu.Unlock()
		return nil, nil
	}
	if l, err := join(); err != nil || l != nil {
		return leaseOrNil(l), err
	}
	for {
		select {
		case <-ctx.Done():
			m.leave(rkeys, token)
			return nil, notObtained(last, ctx.Err())
		case <-w.wake:
		}
		m.mu.Lock()
		closed, fence, lower := m.closed, w.grantFence, w.lowerBound
		w.grantFence = ""
		m.mu.Unlock()
		if closed {
			m.leave(rkeys, token)
			return nil, ErrClosed
		}
		if fence != "" {
			l, err := m.handedOver(ctx, keys, rkeys, token, fence, lower)
			if err != nil {
				m.leave(rkeys, token)
				return nil, err
			}
			if l != nil {
				m.granted(w)
				return l, nil
			}
			// The grant ran out before we could confirm it: the claim
			// below finds out where we stand.
		}
		start := time.Now()
		l, lost, err := m.fifoClaim(ctx, keys, rkeys, token)
		if l != nil {
			m.granted(w)
		}
		if err != nil || l != nil {
			return leaseOrNil(l), err
		}
		if !lost {
			// Still queued when the claim ran: a later grant comes after it.
			m.mu.Lock()
			w.lowerBound = start
			m.mu.Unlock()
		}
		if lost {
			// Our entry ran out (the renewals could not reach Redis in
			// time): queue again, at the end.
			if l, err := join(); err != nil || l != nil {
				if l != nil {
					m.granted(w)
				}
				return leaseOrNil(l), err
			}
		}
	}
}

// handedOver makes the lease of a lock that a release handed to this
// waiter with fence. The release set the key to expire FIFOLiveness after
// the grant, which came after lower, the start of the waiter's last request
// that found it still queued; the lease is valid until then, and an Extend
// confirms it for the whole TTL: in the background when enough of that
// time is left, before returning otherwise. It returns a nil lease if the
// grant ran out before it was confirmed.
func (m *Mutex) handedOver(ctx context.Context, keys, rkeys []string, token, fenceStr string, lower time.Time) (*lease, error) {
	fence, err := strconv.ParseInt(fenceStr, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("mutex: acquire: bad fence %q", fenceStr)
	}
	validity := min(m.ttl, FIFOLiveness)
	l := m.newLeaseFor(keys, rkeys, token, fenceStr, fence, lower, validity, time.Now())
	if time.Until(l.Deadline()) >= validity/2 {
		m.background(time.Until(l.Deadline()), func(ctx context.Context) {
			// A failure ends the lease, or leaves it to its deadline.
			_ = l.Extend(ctx)
		})
		return l, nil
	}
	if err := l.Extend(ctx); err != nil {
		if errors.Is(err, ErrNotHeld) {
			return nil, nil
		}
		return nil, err
	}
	return l, nil
}

// granted notes that a queued waiter got its keys: its deadline entries, if
// it ever had any, are removed by the next renewal.
func (m *Mutex) granted(w *waiter) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !w.renewed {
		return
	}
	for _, q := range w.queues {
		m.forget[q.key] = append(m.forget[q.key], w.token)
	}
	m.startRenewLocked()
}

// leaseOrNil keeps a nil *lease from becoming a non-nil Lease.
func leaseOrNil(l *lease) Lease {
	if l == nil {
		return nil
	}
	return l
}

// startRenewLocked starts the loop that renews the queue entries of this
// Mutex's FIFO waiters. m.mu must be held.
func (m *Mutex) startRenewLocked() {
	if m.renewing || m.closed {
		return
	}
	m.renewing = true
	m.bg.Add(1)
	go m.renewLoop()
}

// renewLoop renews, every fifoRenewEvery, the deadlines of the queued FIFO
// waiters of this Mutex, one script per key in one pipeline. The script
// also drops dead waiters, removes the deadline entries of waiters granted
// since the last renewal, and wakes the head of a queue whose lock is free,
// which moves a queue on after a holder or head waiter crashed, or after a
// lost wake-up. The loop ends when nothing is left to do.
func (m *Mutex) renewLoop() {
	defer m.bg.Done()
	ticker := time.NewTicker(fifoRenewEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
		case <-m.stop:
		}
		m.mu.Lock()
		groups := make(map[string][]string)
		for token, w := range m.tokens {
			if !w.enqueued {
				continue
			}
			w.renewed = true
			for _, q := range w.queues {
				groups[q.key] = append(groups[q.key], token)
			}
		}
		forget := m.forget
		m.forget = make(map[string][]string)
		if (len(groups) == 0 && len(forget) == 0) || m.closed {
			m.renewing = false
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		m.renew(groups, forget)
	}
}

func (m *Mutex) renew(groups, forget map[string][]string) {
	ctx, cancel := context.WithTimeout(context.Background(), fifoRenewEvery)
	defer cancel()
	for k := range forget {
		if _, ok := groups[k]; !ok {
			groups[k] = nil
		}
	}
	pipe := m.client.Pipeline()
	cmds := make([]*redis.Cmd, 0, len(groups))
	args := make([][]any, 0, len(groups))
	keys := make([][]string, 0, len(groups))
	for k, tokens := range groups {
		a := make([]any, 0, 3+len(tokens)+len(forget[k]))
		a = append(a, fifoLivenessMS, m.wakeBase, len(tokens))
		for _, t := range tokens {
			a = append(a, t)
		}
		for _, t := range forget[k] {
			a = append(a, t)
		}
		ks := []string{k, queueKey(k), deadlineKey(k)}
		cmds = append(cmds, fifoRefreshScript.EvalSha(ctx, pipe, ks, a...))
		args = append(args, a)
		keys = append(keys, ks)
	}
	sent := time.Now()
	_, _ = pipe.Exec(ctx)
	var wake, renewed []string
	for i, c := range cmds {
		res, err := c.Slice()
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			res, err = fifoRefreshScript.Run(ctx, m.client, keys[i], args[i]...).Slice()
		}
		if err != nil || len(res) == 0 {
			continue
		}
		// res is {head woken or nil, tokens no longer queued...}.
		if head, ok := res[0].(string); ok {
			wake = append(wake, head)
		}
		lost := make(map[string]bool, len(res)-1)
		for _, v := range res[1:] {
			if s, ok := v.(string); ok {
				lost[s] = true
				wake = append(wake, s)
			}
		}
		for _, t := range groups[keys[i][0]] {
			if !lost[t] {
				renewed = append(renewed, t)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Redis ran the renewal of these waiters while they were queued, so any
	// grant to them comes after it.
	for _, token := range renewed {
		if w := m.tokens[token]; w != nil && w.lowerBound.Before(sent) {
			w.lowerBound = sent
		}
	}
	for _, token := range wake {
		if w := m.tokens[token]; w != nil {
			w.signal()
		}
	}
}
