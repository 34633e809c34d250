package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
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
	node  string // the server that sent it
	// done events carry what they record.
	ev *Event
}

// layoutCheckPeriod is how often a Watcher asks its Topology whether the
// layout changed without being told (BeginChange).
const layoutCheckPeriod = 250 * time.Millisecond

// Watcher follows the lock keys through keyspace notifications and records
// each set (with the value a GET read right after), del, expired, evicted
// and expire in its own history. Notifications are local to the server that
// sends them, so it subscribes on every primary its Topology names.
//
// A broken subscription (a server killed, restarted or disconnecting), a
// change of layout announced by BeginChange (a failover, a slot migration)
// or one it finds itself open a gap in its view. The gap ends once the
// watcher subscribes on every primary of the layout then, enabled the
// notifications there again (a restarted server forgets them) and read the
// lock keys present, which it records at the gap's end. A paused server is
// no gap: the notifications wait in the socket.
type Watcher struct {
	rec        *Recorder
	topo       Topology
	ctx        context.Context // ends at Stop
	cancel     context.CancelFunc
	kick       chan struct{}
	keeperDone chan struct{}
	quit       chan struct{} // the keeper and every receiver stopped
	done       chan struct{} // process stopped
	stopOnce   sync.Once
	stopErr    error

	mu    sync.Mutex
	nodes map[string]*watchedNode
	// layout is the Topology's layout when the last gap ended.
	layout string
	gap    bool
	// gen counts the events that spoil a gap's end under way: a
	// subscription broken, a change announced.
	gen int
	// resyncing: a gap is ending; the notifications received meanwhile
	// are held until the lock keys present have been read.
	resyncing bool
	held      []note
	changing  int // BeginChange calls not yet ended
	queue     []note
	wake      chan struct{}
}

// watchedNode is the watcher's subscription on one primary.
type watchedNode struct {
	addr     string
	client   *redis.Client
	ps       *redis.PubSub
	cancel   context.CancelFunc
	start    func()        // starts the receiver
	done     chan struct{} // closed when the receiver stopped
	synced   chan struct{}
	syncOnce sync.Once
	// subscribed: the subscription is confirmed since its connection last
	// broke (under Watcher.mu).
	subscribed bool
}

// syncChannel is published to on Stop, on each server with the server's
// address as the message: it comes after every notification the server
// sent before it.
const syncChannel = keyspacePrefix + "chaos:watcher-sync"

// StartWatcher watches the one server at addr (StandaloneTopology).
func StartWatcher(ctx context.Context, addr string, rec *Recorder) (*Watcher, error) {
	return WatchTopology(ctx, StandaloneTopology(addr), rec)
}

// WatchTopology subscribes to the lock keys' channels on every primary of
// topo, enables keyspace notifications there, and records into rec until
// Stop. Its connections are named RunnerClientName. The Watcher closes topo
// at Stop (or at once if it fails to start).
func WatchTopology(ctx context.Context, topo Topology, rec *Recorder) (*Watcher, error) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &Watcher{rec: rec, topo: topo, ctx: wctx, cancel: cancel, kick: make(chan struct{}, 1),
		keeperDone: make(chan struct{}), quit: make(chan struct{}), done: make(chan struct{}),
		nodes: map[string]*watchedNode{}, wake: make(chan struct{}, 1)}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	addrs, layout, err := topo.Primaries(sctx)
	if err == nil {
		err = w.follow(sctx, addrs)
	}
	if err == nil {
		err = w.enable(sctx)
	}
	if err != nil {
		cancel()
		w.closeNodes()
		return nil, errors.Join(fmt.Errorf("watcher: %w", err), topo.Close())
	}
	w.layout = layout
	w.push(note{ev: &Event{Op: OpWatcher, Type: TypeStart, T: time.Now().UnixNano()}})
	go w.keep()
	go func() { defer close(w.done); w.process() }()
	return w, nil
}

// watch subscribes on the server at addr; start starts its receiver.
func (w *Watcher) watch(ctx context.Context, addr string) (*watchedNode, error) {
	client := redis.NewClient(&redis.Options{Addr: addr, ClientName: RunnerClientName,
		ContextTimeoutEnabled: true, MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	ps := client.PSubscribe(ctx, keyspacePrefix+"chaos:*")
	if _, err := ps.ReceiveTimeout(ctx, 2*time.Second); err != nil {
		_ = ps.Close()
		_ = client.Close()
		return nil, fmt.Errorf("psubscribe on %s: %w", addr, err)
	}
	nctx, cancel := context.WithCancel(w.ctx)
	n := &watchedNode{addr: addr, client: client, ps: ps, cancel: cancel, done: make(chan struct{}),
		synced: make(chan struct{}), subscribed: true}
	n.start = func() { go func() { defer close(n.done); w.receive(nctx, n) }() }
	return n, nil
}

// close stops the receiver of n and closes its connections.
func (n *watchedNode) close() error {
	n.cancel()
	err := n.ps.Close()
	<-n.done
	return errors.Join(err, n.client.Close())
}

func (w *Watcher) closeNodes() {
	w.mu.Lock()
	nodes := w.nodes
	w.nodes = map[string]*watchedNode{}
	w.mu.Unlock()
	for _, n := range nodes {
		_ = n.close()
	}
}

// follow makes the watched servers those at addrs: it stops watching the
// others and subscribes on the new ones.
func (w *Watcher) follow(ctx context.Context, addrs []string) error {
	var gone []*watchedNode
	var add []string
	w.mu.Lock()
	for addr, n := range w.nodes {
		if !slices.Contains(addrs, addr) {
			gone = append(gone, n)
			delete(w.nodes, addr)
		}
	}
	for _, a := range addrs {
		if w.nodes[a] == nil {
			add = append(add, a)
		}
	}
	w.mu.Unlock()
	for _, n := range gone {
		_ = n.close()
	}
	for _, a := range add {
		n, err := w.watch(ctx, a)
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.nodes[a] = n
		w.mu.Unlock()
		n.start()
	}
	return nil
}

// watched returns the watched servers.
func (w *Watcher) watched() []*watchedNode {
	w.mu.Lock()
	defer w.mu.Unlock()
	nodes := make([]*watchedNode, 0, len(w.nodes))
	for _, a := range sortedKeys(w.nodes) {
		nodes = append(nodes, w.nodes[a])
	}
	return nodes
}

// clientOf returns the connection to the watched server at addr, or nil.
func (w *Watcher) clientOf(addr string) *redis.Client {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.nodes[addr]; n != nil {
		return n.client
	}
	return nil
}

// enable turns the keyspace notifications on, on every watched server.
func (w *Watcher) enable(ctx context.Context) error {
	for _, n := range w.watched() {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := n.client.ConfigSet(cctx, "notify-keyspace-events", keyspaceEvents).Err()
		cancel()
		if err != nil {
			return fmt.Errorf("config set notify-keyspace-events on %s: %w", n.addr, err)
		}
	}
	return nil
}

// BeginChange opens a gap in the view (recorded with what as its note)
// before a change of layout that the watcher cannot follow notification by
// notification: a failover, a slot migration. The gap lasts at least until
// the matching EndChange.
func (w *Watcher) BeginChange(what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.changing++
	w.openGapLocked(Event{Op: OpWatcherGap, Type: TypeInvoke, T: time.Now().UnixNano(), Note: what})
}

// EndChange ends a change begun by BeginChange: the watcher follows the
// layout then and ends the gap.
func (w *Watcher) EndChange() {
	w.mu.Lock()
	w.changing--
	w.mu.Unlock()
	w.poke()
}

func (w *Watcher) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// openGapLocked records the start of a gap, unless one is open, and
// spoils the end of a gap under way. w.mu is held.
func (w *Watcher) openGapLocked(e Event) {
	w.gen++
	w.resyncing, w.held = false, nil
	if w.gap {
		return
	}
	w.gap = true
	w.pushLocked(note{ev: &e})
}

// Stop waits (up to 2s) for the notifications already sent, records what
// is queued, stops following the keys and closes the watcher's
// connections and its Topology. The recorder stays open. Calls after the
// first return the first one's error.
func (w *Watcher) Stop() error {
	w.stopOnce.Do(func() { w.stopErr = w.stop() })
	return w.stopErr
}

func (w *Watcher) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	for _, n := range w.watched() {
		if n.client.Publish(ctx, syncChannel, n.addr).Err() == nil {
			select {
			case <-n.synced:
			case <-ctx.Done():
			}
		}
	}
	cancel()
	w.cancel()
	<-w.keeperDone
	nodes := w.watched()
	for _, n := range nodes {
		<-n.done
	}
	close(w.quit)
	<-w.done
	w.rec.Record(Event{Op: OpWatcher, Type: TypeStop})
	var errs []error
	for _, n := range nodes {
		errs = append(errs, n.close())
	}
	return errors.Join(append(errs, w.topo.Close())...)
}

func (w *Watcher) push(n note) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pushLocked(n)
}

func (w *Watcher) pushLocked(n note) {
	w.queue = append(w.queue, n)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// notify queues a notification, holds it while a gap ends, or drops it
// within a gap.
func (w *Watcher) notify(n note) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case !w.gap:
		w.pushLocked(n)
	case w.resyncing:
		w.held = append(w.held, n)
	}
}

// broken opens a gap: the subscription on n broke.
func (w *Watcher) broken(n *watchedNode, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n.subscribed = false
	if w.nodes[n.addr] != n {
		return // no longer watched
	}
	w.openGapLocked(Event{Op: OpWatcherGap, Type: TypeInvoke, T: time.Now().UnixNano(), Err: n.addr + ": " + err.Error()})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// receive reads the notifications of n until ctx ends. A read error other
// than a timeout means the connection is gone: go-redis connects and
// subscribes again, which the keeper waits for to end the gap.
func (w *Watcher) receive(ctx context.Context, n *watchedNode) {
	for ctx.Err() == nil {
		msg, err := n.ps.ReceiveTimeout(ctx, 200*time.Millisecond)
		if err != nil {
			if isTimeout(err) || ctx.Err() != nil {
				continue
			}
			w.broken(n, err)
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "psubscribe" {
				w.mu.Lock()
				n.subscribed = true
				w.mu.Unlock()
				w.poke()
			}
		case *redis.Message:
			t := time.Now().UnixNano()
			if m.Channel == syncChannel {
				if m.Payload == n.addr {
					n.syncOnce.Do(func() { close(n.synced) })
				}
				continue
			}
			rkey, ok := strings.CutPrefix(m.Channel, keyspacePrefix)
			if !ok {
				continue
			}
			if _, ok := lockKeyName(rkey); !ok {
				continue
			}
			switch m.Payload {
			case TypeSet, TypeDel, TypeExpired, TypeEvicted, TypeExpire:
				w.notify(note{t: t, rkey: rkey, event: m.Payload, node: n.addr})
			}
		}
	}
}

// keep ends gaps, and opens one when the layout changed unannounced,
// until the watcher stops.
func (w *Watcher) keep() {
	defer close(w.keeperDone)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var checked time.Time
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-tick.C:
		case <-w.kick:
		}
		w.mu.Lock()
		gap, changing := w.gap, w.changing
		w.mu.Unlock()
		switch {
		case changing > 0:
		case gap:
			w.resync()
		case time.Since(checked) >= layoutCheckPeriod:
			checked = time.Now()
			w.checkLayout()
		}
	}
}

// checkLayout opens a gap if the layout is not the one the watcher follows.
func (w *Watcher) checkLayout() {
	ctx, cancel := context.WithTimeout(w.ctx, time.Second)
	_, layout, err := w.topo.Primaries(ctx)
	cancel()
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.gap && w.changing == 0 && layout != w.layout {
		w.openGapLocked(Event{Op: OpWatcherGap, Type: TypeInvoke, T: time.Now().UnixNano(), Note: "layout changed unannounced"})
	}
}

// resync tries to end a gap: it follows the layout, waits until every
// primary's subscription is confirmed, enables the notifications there,
// and records the end of the gap followed by the lock keys present then.
// When anything fails or spoils it, the keeper tries again.
func (w *Watcher) resync() {
	w.mu.Lock()
	gen := w.gen
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
	defer cancel()
	addrs, layout, err := w.topo.Primaries(ctx)
	if err != nil || w.follow(ctx, addrs) != nil {
		return
	}
	w.mu.Lock()
	ready := gen == w.gen
	for _, n := range w.nodes {
		ready = ready && n.subscribed
	}
	w.mu.Unlock()
	if !ready || w.enable(ctx) != nil {
		return
	}
	t := time.Now().UnixNano()
	w.mu.Lock()
	if gen != w.gen {
		w.mu.Unlock()
		return
	}
	w.resyncing = true
	w.mu.Unlock()
	present, err := w.snapshot(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil || gen != w.gen || !w.resyncing {
		w.resyncing, w.held = false, nil
		return
	}
	w.pushLocked(note{ev: &Event{Op: OpWatcherGap, Type: TypeOK, T: t, Note: fmt.Sprintf("watching %s", strings.Join(addrs, ","))}})
	for _, e := range present {
		e.T = t
		w.pushLocked(note{ev: &e})
	}
	for _, n := range w.held {
		w.pushLocked(n)
	}
	w.gap, w.resyncing, w.held, w.layout = false, false, nil, layout
}

// snapshot reads every lock key present on the watched servers.
func (w *Watcher) snapshot(ctx context.Context) ([]Event, error) {
	var out []Event
	seen := map[string]bool{}
	for _, n := range w.watched() {
		iter := n.client.Scan(ctx, 0, "chaos:*", 1000).Iterator()
		for iter.Next(ctx) {
			rkey := iter.Val()
			k, ok := lockKeyName(rkey)
			if !ok || seen[rkey] {
				continue
			}
			seen[rkey] = true
			e, err := readLock(ctx, n.client, rkey)
			if err != nil {
				return nil, err
			}
			if e.Token == "" {
				continue // gone meanwhile
			}
			e.Op, e.Type, e.Keys = OpRedis, TypePresent, []string{k}
			out = append(out, e)
		}
		if err := iter.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readLock returns the value (token and fence) and expiry of rkey, read in
// one transaction. Expires is -1 for a key without a TTL; Token is empty
// for a missing key.
func readLock(ctx context.Context, c redis.Cmdable, rkey string) (Event, error) {
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	sent := time.Now()
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
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
// key that was set, until the receivers have stopped and the queue is
// empty.
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
			case <-w.quit:
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

// changePending reports whether a set or a removal (del, expired,
// evicted) of rkey is queued: a value read now may have been set after the
// note being recorded. A notification can arrive later than the next
// grant of the key, so the fence alone does not tell.
func (w *Watcher) changePending(rkey string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, q := range w.queue {
		if q.rkey != rkey {
			continue
		}
		switch q.event {
		case TypeSet, TypeDel, TypeExpired, TypeEvicted:
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
		var v Event
		err := errors.New(n.node + " is no longer watched")
		if c := w.clientOf(n.node); c != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			v, err = readLock(rctx, c, n.rkey)
			cancel()
		}
		switch {
		case err != nil:
			e.Note = "value unknown: " + err.Error()
		case w.changePending(n.rkey) || (v.Fence > 0 && v.Fence*1000 > n.t):
			// The value read may be that of a later set.
			if n.event == TypeExpire {
				return
			}
			e.Note = "value unknown: the key changed again before it was read"
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

// Leftovers records every key under chaos:* still present on the
// primaries: lock keys (Type TypeLock, or TypeLockNoTTL without a TTL), and
// other keys with a TTL (TypeExpiring) or without one (TypePersistent). If
// Redis fails, it records an OpLeftover event of Type TypeFail and returns
// the error.
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
	addrs, _, err := w.topo.Primaries(cctx)
	if err != nil {
		return err
	}
	var others nodeClients
	defer others.Close()
	seen := map[string]bool{} // SCAN may return a key twice
	for _, addr := range addrs {
		c := w.clientOf(addr)
		if c == nil {
			c = others.of(addr)
		}
		iter := c.Scan(cctx, 0, "chaos:*", 1000).Iterator()
		for iter.Next(cctx) {
			rkey := iter.Val()
			if seen[rkey] {
				continue
			}
			seen[rkey] = true
			e := Event{Op: OpLeftover, Keys: []string{rkey}}
			if _, ok := lockKeyName(rkey); ok {
				v, err := readLock(cctx, c, rkey)
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
				d, err := c.PTTL(cctx, rkey).Result()
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
		if err := iter.Err(); err != nil {
			return err
		}
	}
	return nil
}
