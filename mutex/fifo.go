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

// fifoKeys returns the lock, queue and deadline keys of each lock key, and
// then the revocation marker of token.
func fifoKeys(rkeys []string, token string) []string {
	out := make([]string, 0, 3*len(rkeys)+1)
	for _, k := range rkeys {
		out = append(out, k, queueKey(k), deadlineKey(k))
	}
	return append(out, markerKey(rkeys[0], token))
}

// fifo is the FIFO mode: every Lock joins the Redis queue of each of its
// keys; a release hands a key to the head of its queue, and publishes the
// head's token on the wake channel of the head's Mutex, so that exactly
// that waiter, and no other process, wakes.
//
// A waiter's token names one queue entry: a waiter that lost its entry
// joins again under a new token, so that a grant (and its message) is
// never taken for a grant to a later entry.
type fifo struct {
	m *Mutex

	// Guarded by m.mu.
	local  map[string]int         // local waiters per Redis key
	tokens map[string]*fifoWaiter // waiters by current token
	// forget holds, by lock key, the tokens of granted waiters whose
	// deadline entries the next renewal removes.
	forget   map[string][]string
	renewing bool // the renewal loop runs
	// evalRefresh sends the next renewal with its script, after Redis had
	// it no longer: the fallback of the last one may not have reached
	// Redis in time, when the client's connections are all in use.
	evalRefresh bool
	// wakeChannel is where releases wake this Mutex's waiters; wakeBase is
	// its name without the id. On a Cluster, wakeBase is empty and each
	// lock key has a wake channel of its own, in its slot (wakeChannelOf),
	// subscribed to while this Mutex has waiters for the key.
	wakeBase, wakeChannel string
	perKey                bool
	// ready holds, by wake channel subscribed to, a channel closed once
	// Redis confirmed the subscription.
	ready map[string]chan struct{}
}

// fifoWaiter is one Lock call in FIFO mode. Guarded by m.mu but for wake.
type fifoWaiter struct {
	rkeys []string
	kind  string
	token string
	wake  chan struct{} // buffered: a pending reason to look
	// enqueued tells that the entry of token was added to the queues, so
	// that the renewals keep it; renewed that a renewal did.
	enqueued, renewed bool
	// grantFence is set when a release handed the lock to token.
	grantFence string
	// lowerBound is the start of the last request that Redis ran while
	// the entry of token was queued: a grant to it comes after that.
	lowerBound time.Time
}

func newFIFO(m *Mutex) *fifo {
	f := &fifo{
		m:        m,
		local:    make(map[string]int),
		tokens:   make(map[string]*fifoWaiter),
		forget:   make(map[string][]string),
		wakeBase: m.prefix + ":w:",
		ready:    make(map[string]chan struct{}),
	}
	if _, ok := m.client.(*redis.ClusterClient); ok {
		f.perKey, f.wakeBase = true, ""
	}
	f.wakeChannel = f.wakeBase + m.id
	return f
}

func (w *fifoWaiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// wakeChannelOf returns the wake channel of this Mutex for lock key on a
// Cluster; see wake in lib.lua.
func (f *fifo) wakeChannelOf(lockKey string) string {
	return lockKey + ":w:" + f.m.id
}

// kind is the part of a token after the Mutex id that tells a release
// whether it may hand the lock straight to the waiter: only a waiter for
// one key ("s").
func kind(rkeys []string) string {
	if len(rkeys) == 1 {
		return "s."
	}
	return "m."
}

func (f *fifo) check(ctx context.Context, rkeys []string) (int64, error) {
	pipe := f.m.client.Pipeline()
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

// release releases the keys of l and hands each to the head of its queue.
func (f *fifo) release(ctx context.Context, l *lease) (int, bool, error) {
	keys := make([]string, 0, 2*len(l.rkeys))
	for _, k := range l.rkeys {
		keys = append(keys, k, queueKey(k))
	}
	cmd, sends := runCounted(ctx, &f.m.batch, fifoReleaseScript, keys, l.value, l.fence, l.young(), f.wakeBase, fifoLivenessMS, new(sendCounter))
	n, err := cmd.Int()
	return n, sends > 1, err
}

func (f *fifo) tryLock(ctx context.Context, keys, rkeys []string) (Lease, error) {
	token, err := f.m.newToken(kind(rkeys))
	if err != nil {
		return nil, err
	}
	return tried(f.join(ctx, keys, rkeys, token, true))
}

// join takes the resources if nobody holds or waits for any of them;
// otherwise, unless try is set, it queues token for each of them. If Redis
// does not answer, token leaves in the background.
func (f *fifo) join(ctx context.Context, keys, rkeys []string, token string, try bool) (*lease, *NotObtainedError, error) {
	onlyTry := "0"
	if try {
		onlyTry = "1"
	}
	start := time.Now()
	cmd, sends := runCounted(ctx, &f.m.batch, fifoLockScript, fifoKeys(rkeys, token), token, f.m.ttlMS, fifoQueueTTLMS, onlyTry, new(sendCounter))
	res, err := cmd.Slice()
	if err != nil {
		f.failed(rkeys, token, sends, err)
		return nil, nil, err
	}
	l, blocked, err := f.m.grantOrBlocked(res, keys, rkeys, token, start)
	if l != nil {
		if err := f.m.replicated(ctx, l); err != nil {
			return nil, nil, err
		}
	}
	return l, blocked, err
}

// claim takes the resources for a queued waiter at the head of their
// queues. lost reports that the waiter is no longer queued: its entry ran
// out, or the claim granted it too late to use (the grant is being
// released; a claim under the same token would find it and take it back).
func (f *fifo) claim(ctx context.Context, keys, rkeys []string, token string) (l *lease, lost bool, err error) {
	start := time.Now()
	cmd, sends := runCounted(ctx, &f.m.batch, fifoClaimScript, fifoKeys(rkeys, token), token, f.m.ttlMS, new(sendCounter))
	res, err := cmd.Slice()
	if err != nil {
		f.failed(rkeys, token, sends, err)
		return nil, false, err
	}
	if code, _ := res[0].(int64); code == -1 {
		return nil, true, nil
	}
	l, blocked, err := f.m.grantOrBlocked(res, keys, rkeys, token, start)
	if err == nil && l == nil && blocked == nil {
		return nil, true, nil
	}
	if l != nil {
		if err := f.m.replicated(ctx, l); err != nil {
			return nil, false, err
		}
	}
	return l, false, err
}

// failed cleans up after a request of token that failed with err after
// sends writes to Redis: the token leaves its queues, revoked if the
// request may have run without its reply arriving.
func (f *fifo) failed(rkeys []string, token string, sends int32, err error) {
	f.leave(rkeys, token, unknownOutcome(sends, err))
}

// leave removes token from the queues of rkeys in the background, and
// releases any key it holds after all. With revoke, the token is marked
// revoked too, for a request of it whose outcome is unknown.
func (f *fifo) leave(rkeys []string, token string, revoke bool) {
	ttl := "0"
	if revoke {
		ttl = f.m.revokeTTL()
	}
	keys := fifoKeys(rkeys, token)
	f.m.untilDone(func(ctx context.Context) error {
		return fifoLeaveScript.Run(ctx, f.m.client, keys, token, f.wakeBase, ttl).Err()
	})
}

// lock implements Lock in FIFO mode.
func (f *fifo) lock(ctx context.Context, keys, rkeys []string) (Lease, error) {
	m := f.m
	w := &fifoWaiter{rkeys: rkeys, kind: kind(rkeys), wake: make(chan struct{}, 1)}
	token, err := m.newToken(w.kind)
	if err != nil {
		return nil, err
	}
	var last *NotObtainedError
	if !f.queuedLocally(rkeys) {
		// Nobody of this Mutex waits for these keys: try before
		// subscribing, which an uncontended lock does not need.
		l, blocked, err := f.join(ctx, keys, rkeys, token, true)
		if err != nil {
			return nil, ended(ctx, nil, err)
		}
		if l != nil {
			return l, nil
		}
		last = blocked
		if last == nil {
			// The grant came too late to use: queue under a new token.
			if token, err = m.newToken(w.kind); err != nil {
				return nil, err
			}
		}
	}

	// Listen for our token before joining the queue, so that no wake-up
	// can be missed.
	readies, err := f.register(w, token)
	if err != nil {
		return nil, err
	}
	defer f.unregister(w)
	slow := time.NewTimer(m.ttl)
	defer slow.Stop()
wait:
	for _, ready := range readies {
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, notObtained(last, ctx.Err())
		case <-m.stop:
			return nil, ErrClosed
		case <-slow.C:
			// The pub/sub connection is slow or down: the renewal loop
			// still wakes the head of a queue whose lock is free.
			break wait
		}
	}

	// enter joins the queues under the waiter's current token.
	enter := func() (*lease, error) {
		for {
			m.mu.Lock()
			if m.closed {
				m.mu.Unlock()
				return nil, ErrClosed
			}
			w.lowerBound = time.Now()
			token := w.token
			m.mu.Unlock()
			l, blocked, err := f.join(ctx, keys, rkeys, token, false)
			if err != nil {
				return nil, ended(ctx, last, err)
			}
			if l != nil {
				return l, nil
			}
			if blocked == nil {
				// Granted, too late to use: join again as a new entry.
				if err := f.renewToken(w); err != nil {
					return nil, err
				}
				continue
			}
			last = blocked
			m.mu.Lock()
			w.enqueued = true
			f.startRenewLocked()
			m.mu.Unlock()
			return nil, nil
		}
	}
	if l, err := enter(); err != nil || l != nil {
		return leaseOrNil(l), err
	}
	for {
		select {
		case <-ctx.Done():
			f.leave(rkeys, f.tokenOf(w), false)
			return nil, notObtained(last, ctx.Err())
		case <-m.stop:
			f.leave(rkeys, f.tokenOf(w), false)
			return nil, ErrClosed
		case <-w.wake:
		}
		m.mu.Lock()
		closed, token, fence, lower := m.closed, w.token, w.grantFence, w.lowerBound
		w.grantFence = ""
		m.mu.Unlock()
		if closed {
			f.leave(rkeys, token, false)
			return nil, ErrClosed
		}
		if fence != "" {
			l, err := f.handedOver(ctx, keys, rkeys, token, fence, lower)
			if err != nil {
				f.leave(rkeys, token, false)
				return nil, ended(ctx, last, err)
			}
			if l != nil {
				f.granted(w)
				return l, nil
			}
			// The grant ran out before we could confirm it: the claim
			// below finds out where we stand.
		}
		start := time.Now()
		l, lost, err := f.claim(ctx, keys, rkeys, token)
		if err != nil {
			return nil, ended(ctx, last, err)
		}
		if l != nil {
			f.granted(w)
			return l, nil
		}
		if !lost {
			// Still queued when the claim ran: a later grant comes after it.
			m.mu.Lock()
			if w.token == token {
				w.lowerBound = start
			}
			m.mu.Unlock()
			continue
		}
		// Our entry ran out (the renewals could not reach Redis in time),
		// or a grant to it did, or came too late to use: queue again, at
		// the end, as a new entry.
		f.leave(rkeys, token, false)
		if err := f.renewToken(w); err != nil {
			return nil, err
		}
		if l, err := enter(); err != nil || l != nil {
			if l != nil {
				f.granted(w)
			}
			return leaseOrNil(l), err
		}
	}
}

// queuedLocally reports whether waiters of this Mutex queue for one of
// rkeys.
func (f *fifo) queuedLocally(rkeys []string) bool {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	for _, k := range rkeys {
		if f.local[k] > 0 {
			return true
		}
	}
	return false
}

// register makes w the waiter of token, and subscribes to its wake
// channels unless that is done already. It returns the channels closed
// once Redis confirmed those subscriptions.
func (f *fifo) register(w *fifoWaiter, token string) ([]chan struct{}, error) {
	m := f.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	w.token = token
	f.tokens[token] = w
	for _, k := range w.rkeys {
		f.local[k]++
	}
	if !f.perKey {
		return []chan struct{}{f.readyLocked(f.wakeChannel)}, nil
	}
	readies := make([]chan struct{}, len(w.rkeys))
	for i, k := range w.rkeys {
		readies[i] = f.readyLocked(f.wakeChannelOf(k))
	}
	return readies, nil
}

// readyLocked subscribes to channel unless that is done already, and
// returns the channel closed once Redis confirmed it. m.mu must be held.
func (f *fifo) readyLocked(channel string) chan struct{} {
	ready := f.ready[channel]
	if ready == nil {
		ready = make(chan struct{})
		f.ready[channel] = ready
		f.m.subscribeLocked(channel)
	}
	return ready
}

// unregister forgets w. On a Cluster, the wake channel of a key that no
// waiter of this Mutex waits for any more is unsubscribed from.
func (f *fifo) unregister(w *fifoWaiter) {
	m := f.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.tokens[w.token] == w {
		delete(f.tokens, w.token)
	}
	for _, k := range w.rkeys {
		if f.local[k]--; f.local[k] <= 0 {
			delete(f.local, k)
			if f.perKey {
				c := f.wakeChannelOf(k)
				delete(f.ready, c)
				m.unsubscribeLocked(c)
			}
		}
	}
}

// renewToken gives w a new token for a new queue entry; messages for its
// old token are ignored from now on.
func (f *fifo) renewToken(w *fifoWaiter) error {
	token, err := f.m.newToken(w.kind)
	if err != nil {
		return err
	}
	m := f.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.tokens[w.token] == w {
		delete(f.tokens, w.token)
	}
	w.token = token
	w.enqueued, w.renewed, w.grantFence = false, false, ""
	f.tokens[token] = w
	return nil
}

func (f *fifo) tokenOf(w *fifoWaiter) string {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	return w.token
}

// handedOver makes the lease of a lock that a release handed to the entry
// of token with fence. The release set the key to expire FIFOLiveness after
// the grant, which came after lower, the start of the last request that
// found the entry still queued; the lease is valid until then, and an
// Extend confirms it for the whole TTL: in the background when at least
// half of that time is left, before returning otherwise. It returns a nil
// lease if the grant ran out before it was confirmed.
func (f *fifo) handedOver(ctx context.Context, keys, rkeys []string, token, fenceStr string, lower time.Time) (*lease, error) {
	fence, err := strconv.ParseInt(fenceStr, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("acquire: bad fence %q", fenceStr)
	}
	m := f.m
	validity := min(m.ttl, FIFOLiveness)
	l := m.newLeaseFor(keys, rkeys, token, fenceStr, fence, lower, validity, time.Now())
	if l.Err() != nil {
		return nil, nil
	}
	// With replicas to wait for, the grant counts only once they have
	// acknowledged it: the confirmation comes first.
	if m.replicas == 0 && time.Until(l.Deadline()) >= validity/2 {
		m.mu.Lock()
		started := m.goLocked(func(context.Context) {
			// Close waits for this confirmation rather than cancel it,
			// as granted leases outlive Close; it ends by the deadline.
			ctx, cancel := context.WithDeadline(context.Background(), l.Deadline())
			defer cancel()
			// A failure ends the lease, or leaves it to its deadline.
			_ = l.Extend(ctx)
		})
		m.mu.Unlock()
		if started {
			return l, nil
		}
	}
	if err := l.Extend(ctx); err != nil {
		// Too few replicas acknowledged the grant: it is being released,
		// so the waiter must not claim it again under this token.
		if errors.Is(err, ErrNotHeld) && !errors.Is(err, ErrNotReplicated) {
			return nil, nil
		}
		return nil, err
	}
	return l, nil
}

// granted notes that a queued waiter got its keys: its deadline entries, if
// it ever had any, are removed by the next renewal.
func (f *fifo) granted(w *fifoWaiter) {
	m := f.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if !w.renewed {
		return
	}
	for _, k := range w.rkeys {
		f.forget[k] = append(f.forget[k], w.token)
	}
	f.startRenewLocked()
}

// message handles a message on the wake channel: the token of the waiter
// to wake, and the fence if a release granted it the lock. An empty
// payload means that wake-ups may have been lost: every waiter looks.
func (f *fifo) message(channel, payload string) {
	m := f.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.ready[channel] == nil {
		return
	}
	if payload == "" {
		for _, w := range f.tokens {
			w.signal()
		}
		return
	}
	token, fence, _ := strings.Cut(payload, " ")
	if w := f.tokens[token]; w != nil {
		if fence != "" {
			w.grantFence = fence
		}
		w.signal()
	}
}

func (f *fifo) subscribedLocked(channel string) {
	if ready := f.ready[channel]; ready != nil {
		closeOnce(ready)
	}
}

// closeLocked wakes every waiter; each leaves its queues as it returns.
func (f *fifo) closeLocked() {
	for _, w := range f.tokens {
		w.signal()
	}
}

// startRenewLocked starts the loop that renews the queue entries of this
// Mutex's waiters. m.mu must be held.
func (f *fifo) startRenewLocked() {
	if f.renewing {
		return
	}
	f.renewing = f.m.goLocked(f.renewLoop)
}

// renewLoop renews, every fifoRenewEvery, the deadlines of the queued
// waiters of this Mutex, one script per key in one pipeline. The script
// also drops dead waiters, removes the deadline entries of waiters granted
// since the last renewal, and wakes the head of a queue whose lock is free,
// which moves a queue on after a holder or head waiter crashed, or after a
// lost wake-up. The loop ends when nothing is left to do, or with Close.
func (f *fifo) renewLoop(ctx context.Context) {
	m := f.m
	ticker := time.NewTicker(fifoRenewEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
		case <-ctx.Done():
		}
		m.mu.Lock()
		groups := make(map[string][]string)
		for token, w := range f.tokens {
			if !w.enqueued {
				continue
			}
			w.renewed = true
			for _, k := range w.rkeys {
				groups[k] = append(groups[k], token)
			}
		}
		forget := f.forget
		f.forget = make(map[string][]string)
		if (len(groups) == 0 && len(forget) == 0) || ctx.Err() != nil {
			f.renewing = false
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		f.renew(ctx, groups, forget)
	}
}

func (f *fifo) renew(ctx context.Context, groups, forget map[string][]string) {
	m := f.m
	ctx, cancel := context.WithTimeout(ctx, FIFOLiveness/2)
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
		a = append(a, fifoLivenessMS, f.wakeBase, len(tokens))
		for _, t := range tokens {
			a = append(a, t)
		}
		for _, t := range forget[k] {
			a = append(a, t)
		}
		ks := []string{k, queueKey(k), deadlineKey(k)}
		if f.evalRefresh {
			cmds = append(cmds, fifoRefreshScript.Eval(ctx, pipe, ks, a...))
		} else {
			cmds = append(cmds, fifoRefreshScript.EvalSha(ctx, pipe, ks, a...))
		}
		args = append(args, a)
		keys = append(keys, ks)
	}
	sent := time.Now()
	_, _ = pipe.Exec(ctx)
	noScript := false
	var wake, renewed []string
	for i, c := range cmds {
		res, err := c.Slice()
		if isNoScript(err) || isRerouted(err) {
			// Loaded again, or sent again while the key's slot migrates
			// (a refresh is safe to repeat), so that the entries it renews
			// do not run out meanwhile.
			noScript = noScript || isNoScript(err)
			res, err = m.runScript(ctx, fifoRefreshScript, keys[i], args[i]...).Slice()
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
	f.evalRefresh = noScript
	// Redis ran the renewal of these entries while they were queued, so any
	// grant to them comes after it.
	for _, token := range renewed {
		if w := f.tokens[token]; w != nil && w.lowerBound.Before(sent) {
			w.lowerBound = sent
		}
	}
	for _, token := range wake {
		if w := f.tokens[token]; w != nil {
			w.signal()
		}
	}
}
