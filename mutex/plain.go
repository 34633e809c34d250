package mutex

import (
	"context"
	"time"
)

// plain is the mode without FIFO: a waiter tries to take its keys when one
// of them is announced released, and whoever reaches Redis first wins.
//
// Within one Mutex, waiters queue per key in arrival order, so that one
// announcement costs one attempt per Mutex. A waiter claims a key of its
// queues until an attempt finds another of its keys held; then it waits
// for that key only, and waiters behind it may try the rest.
type plain struct {
	m      *Mutex
	queues map[string]*keyQueue // by Redis key, guarded by m.mu
	// lateUntil is, after a release of this Mutex whose outcome is
	// unknown, when the keys it may yet release expire: until then, its
	// own release announcements are heeded, since such a release may run
	// after the waiters it woke found the keys still held. Guarded by m.mu.
	lateUntil time.Time
}

// keyQueue holds the local waiters of one Redis key in arrival order. It
// exists while it has waiters, and the Mutex is subscribed to the key's
// release channel while it exists.
type keyQueue struct {
	key     string
	waiters []*waiter
	ready   chan struct{} // closed once Redis confirmed the subscription
	// releases counts the release announcements of the key, so that a
	// waiter can tell that one came while its attempt was in flight.
	releases uint64
}

// waiter is one Lock call waiting in the queues of its keys. Guarded by
// m.mu but for its channels.
type waiter struct {
	queues []*keyQueue
	wake   chan struct{}      // buffered: a pending reason to attempt
	hint   chan time.Duration // buffered: nothing to try before then
	// blocked is the Redis key that the waiter's last attempt found held,
	// or empty before its first attempt.
	blocked string
	// missed tells that a key it claims was announced released while
	// another waiter had the turn.
	missed bool
	// last is what the waiter's last attempt found held, if anything.
	last *NotObtainedError
}

func newPlain(m *Mutex) *plain {
	return &plain{m: m, queues: make(map[string]*keyQueue)}
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// releasesLocked sums the release announcements of the waiter's keys.
func (w *waiter) releasesLocked() uint64 {
	var n uint64
	for _, q := range w.queues {
		n += q.releases
	}
	return n
}

// claims reports whether the waiter may take key next: it has not tried
// yet, or its last attempt found key held.
func (w *waiter) claims(key string) bool {
	return w.blocked == "" || w.blocked == key
}

// mayTryLocked reports whether no waiter ahead of w claims a key of w.
func (w *waiter) mayTryLocked() bool {
	for _, q := range w.queues {
		for _, x := range q.waiters {
			if x == w {
				break
			}
			if x.claims(q.key) {
				return false
			}
		}
	}
	return true
}

// firstClaimer returns the first waiter of q that claims its key, or nil.
func (q *keyQueue) firstClaimer() *waiter {
	for _, x := range q.waiters {
		if x.claims(q.key) {
			return x
		}
	}
	return nil
}

// kickLocked wakes the waiters of qs that may try now and have a reason
// to: no attempt yet, or a release they missed. With held, a waiter that
// just left qs holds their keys: a waiter that claims one of them is left
// to wait for its release.
func (p *plain) kickLocked(qs []*keyQueue, held bool) {
	for _, q := range qs {
		for _, x := range q.waiters {
			if held && claimsAny(x, qs) {
				continue
			}
			if (x.blocked == "" || x.missed) && x.mayTryLocked() {
				x.signal()
			}
		}
	}
}

// claimsAny reports whether x claims the key of one of qs.
func claimsAny(x *waiter, qs []*keyQueue) bool {
	for _, q := range qs {
		if x.claims(q.key) {
			return true
		}
	}
	return false
}

func (p *plain) tryLock(ctx context.Context, keys, rkeys []string) (Lease, error) {
	return tried(p.attempt(ctx, keys, rkeys))
}

// attempt runs the acquire script once under a new token. It returns a
// lease when granted, or a *NotObtainedError naming the held key, or an
// error; or nothing at all when the grant's reply came too late to use it.
func (p *plain) attempt(ctx context.Context, keys, rkeys []string) (*lease, *NotObtainedError, error) {
	m := p.m
	token, err := m.newToken("")
	if err != nil {
		return nil, nil, err
	}
	// rkeys has room for the marker (see checkKeys), which no other
	// attempt of this call uses at the same time.
	akeys := append(rkeys[:len(rkeys):cap(rkeys)], markerKey(rkeys[0], token))
	start := time.Now()
	cmd, sends := runCounted(ctx, &m.batch, acquireScript, akeys, token, m.ttlMS, new(sendCounter))
	res, err := cmd.Slice()
	if err != nil {
		if unknownOutcome(sends, err) {
			// The script may have run without its reply reaching us.
			m.releaseUnknown(rkeys, token)
		}
		return nil, nil, err
	}
	l, blocked, err := m.grantOrBlocked(res, keys, rkeys, token, start)
	if l != nil {
		if err := m.replicated(ctx, l); err != nil {
			return nil, nil, err
		}
	}
	return l, blocked, err
}

// lock implements Lock.
func (p *plain) lock(ctx context.Context, keys, rkeys []string) (Lease, error) {
	m := p.m
	var last *NotObtainedError
	blocked := ""
	if !p.queuedLocally(rkeys) {
		// Nobody of this Mutex waits for these keys: try at once.
		l, b, err := p.attempt(ctx, keys, rkeys)
		if err != nil || l != nil {
			if err != nil {
				return nil, ended(ctx, nil, err)
			}
			return l, nil
		}
		if b != nil {
			last = b
			blocked = rkeys[indexOf(keys, b.Key)]
		}
	}

	w, err := p.enqueue(rkeys, blocked)
	if err != nil {
		return nil, err
	}
	acquired := false
	defer func() { p.dequeue(w, acquired) }()

	// Attempt again once the subscriptions are confirmed, so that a release
	// between the first attempt and the subscription is not missed.
	for _, q := range w.queues {
		select {
		case <-q.ready:
		case <-ctx.Done():
			return nil, notObtained(p.lastFor(w, last), ctx.Err())
		case <-m.stop:
			return nil, ErrClosed
		case <-time.After(m.ttl):
			// The pub/sub connection is slow or down: carry on, the
			// timer below still re-checks.
		}
	}
	m.mu.Lock()
	w.missed = true
	p.kickLocked(w.queues, false)
	m.mu.Unlock()

	timer := time.NewTimer(m.ttl)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, notObtained(p.lastFor(w, last), ctx.Err())
		case <-m.stop:
			return nil, ErrClosed
		case <-w.wake:
		case d := <-w.hint:
			// A local waiter ahead of us took a key of ours: nothing to
			// try until it releases it, or until its TTL.
			resetTimer(timer, d)
			continue
		case <-timer.C:
		}
		m.mu.Lock()
		closed, run := m.closed, w.mayTryLocked()
		if run {
			w.missed = false
		}
		heard := w.releasesLocked()
		m.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if !run {
			resetTimer(timer, m.ttl)
			continue
		}
		l, b, err := p.attempt(ctx, keys, rkeys)
		if err != nil {
			return nil, ended(ctx, p.lastFor(w, last), err)
		}
		if l != nil {
			acquired = true
			return l, nil
		}
		if b == nil {
			// The grant came too late to use: try again.
			w.signal()
			continue
		}
		last = b
		m.mu.Lock()
		w.last = b
		w.blocked = rkeys[indexOf(keys, b.Key)]
		if w.releasesLocked() != heard {
			// A release came during the attempt, and may have gone to a
			// waiter that claimed the key while we claimed another.
			w.signal()
		}
		// Waiters behind us on our other keys may try them now.
		p.kickLocked(w.queues, false)
		m.mu.Unlock()
		// Re-check when the holder's TTL runs out at the latest, in case
		// its release announcement is lost.
		d := b.RetryAfter
		if d <= 0 {
			d = m.ttl
		}
		resetTimer(timer, d+time.Millisecond)
	}
}

// lastFor returns last, what w's own last attempt found held, or if w
// made none that got an answer, what a waiter ahead of it in the queue of
// one of its keys found held: the key that kept w waiting.
func (p *plain) lastFor(w *waiter, last *NotObtainedError) *NotObtainedError {
	if last != nil {
		return last
	}
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	for _, q := range w.queues {
		for _, x := range q.waiters {
			if x == w {
				break
			}
			if x.last != nil && x.blocked == q.key {
				return x.last
			}
		}
	}
	return nil
}

// indexOf returns the index of key in keys, or 0 if it is not there.
func indexOf(keys []string, key string) int {
	for i, k := range keys {
		if k == key {
			return i
		}
	}
	return 0
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// queuedLocally reports whether waiters of this Mutex queue for one of
// rkeys.
func (p *plain) queuedLocally(rkeys []string) bool {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	for _, k := range rkeys {
		if p.queues[k] != nil {
			return true
		}
	}
	return false
}

// enqueue adds a waiter to the local queues of rkeys, creating the queues
// that do not exist yet, each subscribed to its key's release channel.
func (p *plain) enqueue(rkeys []string, blocked string) (*waiter, error) {
	m := p.m
	w := &waiter{
		queues:  make([]*keyQueue, len(rkeys)),
		wake:    make(chan struct{}, 1),
		hint:    make(chan time.Duration, 1),
		blocked: blocked,
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var fresh []string
	for i, k := range rkeys {
		q := p.queues[k]
		if q == nil {
			q = &keyQueue{key: k, ready: make(chan struct{})}
			p.queues[k] = q
			fresh = append(fresh, k)
		}
		q.waiters = append(q.waiters, w)
		w.queues[i] = q
	}
	if len(fresh) > 0 {
		m.subscribeLocked(fresh...)
	}
	return w, nil
}

// dequeue removes a waiter from its queues, and tells the waiters that
// now have the turn what to do: attempt if w gave up, or wait for the TTL
// (or a release) if w took the keys.
func (p *plain) dequeue(w *waiter, acquired bool) {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var gone []string
	for _, q := range w.queues {
		for i, x := range q.waiters {
			if x == w {
				q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
				break
			}
		}
		if len(q.waiters) == 0 {
			delete(p.queues, q.key)
			gone = append(gone, q.key)
		}
	}
	for _, q := range w.queues {
		x := q.firstClaimer()
		if x == nil || !x.mayTryLocked() {
			continue
		}
		if acquired {
			select {
			case x.hint <- m.ttl + time.Millisecond:
			default:
			}
		} else {
			// w may have had the turn for a release: pass it on.
			x.signal()
		}
	}
	// Waiters that w no longer holds up may try their other keys.
	p.kickLocked(w.queues, acquired)
	if len(gone) > 0 {
		m.unsubscribeLocked(gone...)
	}
}

// message wakes, for a release announcement on the channel of a key (or a
// renewed subscription), the first local waiter that claims the key, if it
// may try. Every other waiter that claims the key notes the release it
// missed: it tries once the waiters ahead of it no longer claim its keys,
// as when the first one's attempt finds another of its keys held. The
// announcement of a release by this Mutex, which names its id, is left
// alone, as release woke the waiters already; but not for a TTL after a
// release whose outcome was unknown, which may have run after the waiters
// it woke found the keys still held.
func (p *plain) message(key, payload string) {
	if payload != "" && payload == p.m.id {
		p.m.mu.Lock()
		late := time.Now().Before(p.lateUntil)
		p.m.mu.Unlock()
		if !late {
			return
		}
	}
	p.released(key)
}

// released does message's work for a release of key.
func (p *plain) released(key string) {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	q := p.queues[key]
	if q == nil {
		return
	}
	q.releases++
	first := true
	for _, x := range q.waiters {
		if !x.claims(key) {
			continue
		}
		if first && x.mayTryLocked() {
			x.signal()
		} else {
			x.missed = true
		}
		first = false
	}
}

func (p *plain) subscribedLocked(channel string) {
	if q := p.queues[channel]; q != nil {
		closeOnce(q.ready)
	}
}

// closeOnce closes ch unless it is closed. Its closers must hold one lock.
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (p *plain) closeLocked() {
	for _, q := range p.queues {
		for _, w := range q.waiters {
			w.signal()
		}
	}
}

func (p *plain) check(ctx context.Context, rkeys []string) (int64, error) {
	return p.m.client.Exists(ctx, rkeys...).Result()
}

// release runs the release script for l. When the script may have
// released a key, the Mutex's own waiters for it are woken at once,
// without waiting for the announcement to come back through pub/sub.
func (p *plain) release(ctx context.Context, l *lease) (int, bool, error) {
	cmd, sends := runCounted(ctx, &p.m.batch, releaseScript, l.rkeys, l.value, l.fence, l.young(), p.m.sharded, new(sendCounter))
	n, err := cmd.Int()
	if err != nil && unknownOutcome(sends, err) {
		// The release may run later than the wake-up below: heed its
		// announcement until the keys expire anyway.
		p.m.mu.Lock()
		if t := time.Now().Add(p.m.ttl); t.After(p.lateUntil) {
			p.lateUntil = t
		}
		p.m.mu.Unlock()
	}
	// A send whose reply was lost may have released the keys although
	// the re-send found them gone (n 0, no error).
	if n > 0 || sends > 1 || (err != nil && sends > 0) {
		for _, k := range l.rkeys {
			p.released(k)
		}
	}
	return n, sends > 1, err
}
