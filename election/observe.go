package election

import (
	"context"
	"errors"
	"sync"
	"time"
)

// resyncPause is the pause before the current leader is read again after
// a read failed.
const resyncPause = 100 * time.Millisecond

// observer delivers the leader changes of one name to one channel.
type observer struct {
	e    *Election
	name string
	out  chan Leader

	mu     sync.Mutex
	queue  []Leader // to deliver, in order
	resync bool     // read the record: a subscription was (re)confirmed
	last   int64    // fence of the last leader queued
	// checked is the fence of the last leader found held before delivery;
	// used by run only.
	checked int64
	kick    chan struct{}
}

// Observe returns a channel that delivers the leader of each new term of
// name, in order, once each: the current leader first, if any, then every
// leader announced by a Campaign, without polling. Terms are told apart by
// their fences, which increase, so a leader is never delivered twice nor
// after a later one. Announcements come through pub/sub; when the
// connection is lost and comes back, Observe reads the current leader
// and delivers it if it changed meanwhile (terms that began and ended
// while the connection was down are not delivered). Before it delivers a
// leader, Observe checks with the Locker that name is held, and drops the
// announcement of a Campaign that gave up after all.
//
// The channel is closed when ctx ends or the Election is closed, and at
// once for an empty or oversized name. A receiver that falls behind loses
// nothing: changes wait for it in order.
func (e *Election) Observe(ctx context.Context, name string) <-chan Leader {
	out := make(chan Leader)
	if checkName(name) != nil {
		close(out)
		return out
	}
	o := &observer{e: e, name: name, out: out, kick: make(chan struct{}, 1)}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		close(out)
		return out
	}
	sub := e.ps.Subscribe(e.recordKey(name), o.handle)
	e.wg.Go(func() {
		defer close(out)
		defer sub.Unsubscribe()
		o.run(ctx)
	})
	return out
}

// handle takes an announcement, or a (re)confirmed subscription, from the
// pub/sub connection. It does not block.
func (o *observer) handle(payload string, confirmed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if confirmed {
		o.resync = true
	} else if l, ok := parseRecord(payload); ok {
		o.pushLocked(l)
	}
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// pushLocked queues l unless a term as late was queued already.
func (o *observer) pushLocked(l Leader) {
	if l.Fence <= o.last {
		return
	}
	o.last = l.Fence
	o.queue = append(o.queue, l)
}

func (o *observer) run(ctx context.Context) {
	var retry <-chan time.Time // a failed read of the record is due again
	for {
		o.mu.Lock()
		resync := o.resync
		o.resync = false
		var next *Leader
		if len(o.queue) > 0 {
			next = &o.queue[0]
		}
		o.mu.Unlock()
		if resync {
			l, err := o.e.Leader(ctx, o.name)
			switch {
			case err == nil:
				o.mu.Lock()
				o.pushLocked(l)
				o.mu.Unlock()
			case !errors.Is(err, ErrNoLeader) && ctx.Err() == nil:
				retry = time.After(resyncPause)
			}
			continue
		}
		out := o.out
		var l Leader
		if next == nil {
			out = nil // nothing to deliver: wait
		} else {
			l = *next
			if l.Fence > o.checked {
				// An announcement whose name is free came from a
				// Campaign that gave up: drop it (see Election.held).
				held, err := o.e.held(ctx, o.name)
				if err == nil && !held {
					o.mu.Lock()
					o.queue = o.queue[1:]
					o.mu.Unlock()
					continue
				}
				o.checked = l.Fence
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-o.e.stop:
			return
		case <-retry:
			retry = nil
			o.mu.Lock()
			o.resync = true
			o.mu.Unlock()
		case <-o.kick:
		case out <- l:
			o.mu.Lock()
			o.queue = o.queue[1:]
			o.mu.Unlock()
		}
	}
}
