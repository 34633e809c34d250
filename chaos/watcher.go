package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// WatcherClient is the client id of the key watcher's history.
const WatcherClient = -3

// keyspaceEvents is the notify-keyspace-events setting the watcher needs:
// keyspace channels (K) for generic commands (g: del, expire), string
// commands ($: set), expiries (x) and evictions (e).
const keyspaceEvents = "Kg$xe"

const keyspacePrefix = "__keyspace@0__:"

// lockKeyName maps a Redis key to the client key it locks: "chaos:{hot}"
// (mutex.Mutex with prefix chaos) and "chaos:broken:hot" (BrokenLocker)
// both give "hot". Queues, deadline sets and revocation markers are not lock
// keys.
func lockKeyName(rkey string) (string, bool) {
	if k, ok := strings.CutPrefix(rkey, "chaos:broken:"); ok {
		return k, k != "" && !strings.Contains(k, ":")
	}
	rest, ok := strings.CutPrefix(rkey, "chaos:{")
	if !ok || !strings.HasSuffix(rest, "}") {
		return "", false
	}
	k := strings.TrimSuffix(rest, "}")
	return k, k != "" && !strings.ContainsAny(k, "{}")
}

// parseLockValue splits a stored lock value "<token>:<fence>"; a value
// without a fence (BrokenLocker) is all token.
func parseLockValue(v string) (token string, fence int64) {
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		if f, err := strconv.ParseInt(v[i+1:], 10, 64); err == nil {
			return v[:i], f
		}
	}
	return v, 0
}

// note is a keyspace notification (or a change of the watcher's state)
// waiting to be recorded, stamped when it was received.
type note struct {
	t     int64
	rkey  string
	event string
	// done events carry what they record.
	ev *Event
}

// Watcher follows the lock keys through keyspace notifications and records
// each set (with the value a GET read right after), del, expired, evicted
// and expire in its own history. It survives a paused, restarted or
// disconnecting server: after a reconnection it enables the notifications
// again (a restarted server forgets them) and records a gap, followed by
// the lock keys present at the gap's end.
type Watcher struct {
	rec      *Recorder
	client   *redis.Client
	ps       *redis.PubSub
	cancel   context.CancelFunc
	recvDone chan struct{}
	done     chan struct{}
	synced   chan struct{}
	syncOnce sync.Once
	stopOnce sync.Once
	stopErr  error

	mu    sync.Mutex
	queue []note
	wake  chan struct{}
}

// syncChannel is published to on Stop: its message comes after every
// notification sent before it.
const syncChannel = keyspacePrefix + "chaos:watcher-sync"

// StartWatcher enables keyspace notifications on the server at addr,
// subscribes to the lock keys' channels and records into rec until Stop.
// Its connections are named RunnerClientName.
func StartWatcher(ctx context.Context, addr string, rec *Recorder) (*Watcher, error) {
	client := redis.NewClient(&redis.Options{Addr: addr, ClientName: RunnerClientName,
		ContextTimeoutEnabled: true, MaxRetries: -1})
	w := &Watcher{rec: rec, client: client, recvDone: make(chan struct{}), done: make(chan struct{}),
		synced: make(chan struct{}), wake: make(chan struct{}, 1)}
	if err := w.enable(ctx, 2*time.Second); err != nil {
		_ = client.Close()
		return nil, err
	}
	w.ps = client.PSubscribe(ctx, keyspacePrefix+"chaos:*")
	if _, err := w.ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		_ = w.ps.Close()
		_ = client.Close()
		return nil, fmt.Errorf("watcher: psubscribe: %w", err)
	}
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel = wcancel
	w.push(note{ev: &Event{Op: OpWatcher, Type: TypeStart, T: time.Now().UnixNano()}})
	go func() { defer close(w.recvDone); w.receive(wctx) }()
	go func() { defer close(w.done); w.process() }()
	return w, nil
}

// enable turns the keyspace notifications on.
func (w *Watcher) enable(ctx context.Context, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := w.client.ConfigSet(cctx, "notify-keyspace-events", keyspaceEvents).Err(); err != nil {
		return fmt.Errorf("watcher: config set notify-keyspace-events: %w", err)
	}
	return nil
}

// Stop waits (up to 2s) for the notifications already sent, records what
// is queued, stops following the keys and closes the watcher's
// connections. The recorder stays open. Calls after the first return the
// first one's error.
func (w *Watcher) Stop() error {
	w.stopOnce.Do(func() { w.stopErr = w.stop() })
	return w.stopErr
}

func (w *Watcher) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if w.client.Publish(ctx, syncChannel, "").Err() == nil {
		select {
		case <-w.synced:
		case <-ctx.Done():
		}
	}
	cancel()
	w.cancel()
	<-w.done
	w.rec.Record(Event{Op: OpWatcher, Type: TypeStop})
	return errors.Join(w.ps.Close(), w.client.Close())
}

func (w *Watcher) push(n note) {
	w.mu.Lock()
	w.queue = append(w.queue, n)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// receive reads notifications until ctx ends. A read error other than a
// timeout means the connection is gone: go-redis connects and subscribes
// again, and once that subscription is confirmed and the notifications are
// enabled again, the gap ends. Notifications within a gap are dropped: the
// lock keys present at its end are recorded instead.
func (w *Watcher) receive(ctx context.Context) {
	gap, subscribed := false, false
	for ctx.Err() == nil {
		if gap && subscribed && w.resume(ctx) {
			gap = false
		}
		msg, err := w.ps.ReceiveTimeout(ctx, 200*time.Millisecond)
		if err != nil {
			if isTimeout(err) || ctx.Err() != nil {
				continue
			}
			if !gap {
				w.push(note{ev: &Event{Op: OpWatcherGap, Type: TypeInvoke, T: time.Now().UnixNano(), Err: err.Error()}})
			}
			gap, subscribed = true, false
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "psubscribe" {
				subscribed = true
			}
		case *redis.Message:
			t := time.Now().UnixNano()
			if m.Channel == syncChannel {
				w.syncOnce.Do(func() { close(w.synced) })
				continue
			}
			rkey, ok := strings.CutPrefix(m.Channel, keyspacePrefix)
			if !ok || gap {
				continue
			}
			if _, ok := lockKeyName(rkey); !ok {
				continue
			}
			switch m.Payload {
			case TypeSet, TypeDel, TypeExpired, TypeEvicted, TypeExpire:
				w.push(note{t: t, rkey: rkey, event: m.Payload})
			}
		}
	}
}

// resume enables the notifications again after a reconnection, records the
// end of the gap and the lock keys present then. It reports false if Redis
// did not answer in time; the caller tries again.
func (w *Watcher) resume(ctx context.Context) bool {
	if w.enable(ctx, time.Second) != nil {
		return false
	}
	t := time.Now().UnixNano()
	present, err := w.snapshot(ctx)
	if err != nil {
		return false
	}
	w.push(note{ev: &Event{Op: OpWatcherGap, Type: TypeOK, T: t}})
	for _, e := range present {
		e.T = t
		w.push(note{ev: &e})
	}
	return true
}

// snapshot reads every lock key present.
func (w *Watcher) snapshot(ctx context.Context) ([]Event, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out []Event
	seen := map[string]bool{}
	iter := w.client.Scan(cctx, 0, "chaos:*", 1000).Iterator()
	for iter.Next(cctx) {
		rkey := iter.Val()
		k, ok := lockKeyName(rkey)
		if !ok || seen[rkey] {
			continue
		}
		seen[rkey] = true
		e, err := w.read(cctx, rkey)
		if err != nil {
			return nil, err
		}
		if e.Token == "" {
			continue // gone meanwhile
		}
		e.Op, e.Type, e.Keys = OpRedis, TypePresent, []string{k}
		out = append(out, e)
	}
	return out, iter.Err()
}

// read returns the value (token and fence) and expiry of rkey, read in one
// transaction. Expires is -1 for a key without a TTL; Token is empty for a
// missing key.
func (w *Watcher) read(ctx context.Context, rkey string) (Event, error) {
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	sent := time.Now()
	_, err := w.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, rkey)
		pttl = p.PTTL(ctx, rkey)
		return nil
	})
	var e Event
	if err != nil && !errors.Is(err, redis.Nil) {
		return e, err
	}
	v, err := get.Result()
	if errors.Is(err, redis.Nil) {
		return e, nil
	}
	e.Token, e.Fence = parseLockValue(v)
	switch d := pttl.Val(); {
	case d >= 0:
		e.Expires = sent.Add(d).UnixNano()
	case d == -1:
		e.Expires = -1
	}
	return e, nil
}

// process records the queued notes in order, reading the value of each
// key that was set, until the receiver has stopped and the queue is empty.
func (w *Watcher) process() {
	for {
		w.mu.Lock()
		var n note
		empty := len(w.queue) == 0
		if !empty {
			n = w.queue[0]
			w.queue = w.queue[1:]
		}
		w.mu.Unlock()
		if empty {
			select {
			case <-w.wake:
				continue
			case <-w.recvDone:
			}
			w.mu.Lock()
			empty = len(w.queue) == 0
			w.mu.Unlock()
			if empty {
				return
			}
			continue
		}
		if n.ev != nil {
			w.rec.Record(*n.ev)
			continue
		}
		w.record(n)
	}
}

// setPending reports whether a set of rkey is queued.
func (w *Watcher) setPending(rkey string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, q := range w.queue {
		if q.rkey == rkey && q.event == TypeSet {
			return true
		}
	}
	return false
}

// dropExpire drops the queued expire of rkey that follows its set (SET with
// PX notifies both), if nothing else about rkey is queued before it.
func (w *Watcher) dropExpire(rkey string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, q := range w.queue {
		if q.rkey != rkey {
			continue
		}
		if q.event == TypeExpire {
			w.queue = append(w.queue[:i:i], w.queue[i+1:]...)
		}
		return
	}
}

func (w *Watcher) record(n note) {
	k, _ := lockKeyName(n.rkey)
	e := Event{Op: OpRedis, Type: n.event, T: n.t, Keys: []string{k}}
	switch n.event {
	case TypeSet, TypeExpire:
		if n.event == TypeSet {
			w.dropExpire(n.rkey)
		}
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := w.read(rctx, n.rkey)
		cancel()
		switch {
		case err != nil:
			e.Note = "value unknown: " + err.Error()
		case w.setPending(n.rkey) || (v.Fence > 0 && v.Fence*1000 > n.t):
			// The value read may be that of a later set.
			if n.event == TypeExpire {
				return
			}
			e.Note = "value unknown: the key was set again before it was read"
		case v.Token == "":
			if n.event == TypeExpire {
				return
			}
			e.Note = "value unknown: the key was gone before it was read"
		default:
			e.Token, e.Fence, e.Expires = v.Token, v.Fence, v.Expires
		}
	}
	w.rec.Record(e)
}

// Leftovers records every key under chaos:* still present: lock keys (Type
// TypeLock, or TypeLockNoTTL without a TTL), and other keys with a TTL
// (TypeExpiring) or without one (TypePersistent). If Redis fails, it
// records an OpLeftover event of Type TypeFail and returns the error.
func (w *Watcher) Leftovers(ctx context.Context) error {
	err := w.leftovers(ctx)
	if err != nil {
		w.rec.Record(Event{Op: OpLeftover, Type: TypeFail, Err: err.Error()})
	}
	return err
}

func (w *Watcher) leftovers(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	seen := map[string]bool{} // SCAN may return a key twice
	iter := w.client.Scan(cctx, 0, "chaos:*", 1000).Iterator()
	for iter.Next(cctx) {
		rkey := iter.Val()
		if seen[rkey] {
			continue
		}
		seen[rkey] = true
		e := Event{Op: OpLeftover, Keys: []string{rkey}}
		if _, ok := lockKeyName(rkey); ok {
			v, err := w.read(cctx, rkey)
			if err != nil {
				return err
			}
			if v.Token == "" {
				continue
			}
			e.Token, e.Fence, e.Expires = v.Token, v.Fence, v.Expires
			e.Type = TypeLock
			if v.Expires == -1 {
				e.Type = TypeLockNoTTL
			}
		} else {
			d, err := w.client.PTTL(cctx, rkey).Result()
			if err != nil {
				return err
			}
			switch {
			case d == -2:
				continue
			case d == -1:
				e.Type = TypePersistent
			default:
				e.Type = TypeExpiring
			}
		}
		w.rec.Record(e)
	}
	return iter.Err()
}
