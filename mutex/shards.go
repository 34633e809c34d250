package mutex

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jpillora/backoff"
	"github.com/redis/go-redis/v9"
)

// pubsub is how a Mutex subscribes to channels: one subscriber, or on a
// Redis Cluster a shardRouter.
type pubsub interface {
	subscribeLocked(channels []string)
	unsubscribeLocked(channels []string)
	close() error
}

// newPubSub returns the pub/sub of m: on a Cluster, a router of sharded
// subscriptions; otherwise one connection.
func newPubSub(m *Mutex) pubsub {
	if cc, ok := m.client.(*redis.ClusterClient); ok {
		return newShardRouter(m, cc)
	}
	return newSubscriber(m, m.client.Subscribe(context.Background()), nil)
}

// channelSlot returns the Cluster hash slot of a channel of the Mutex,
// which names the hash tag of its lock key.
func channelSlot(channel string) int {
	if i := strings.IndexByte(channel, '{'); i >= 0 {
		if j := strings.IndexByte(channel[i+1:], '}'); j > 0 {
			return keySlot(channel[i+1 : i+1+j])
		}
	}
	return keySlot(channel)
}

// shardRouter subscribes a Mutex on a Redis Cluster to the channels of its
// keys through sharded pub/sub (Redis 7 and later), so that a release is
// carried by the shard that owns the key only: one connection, a
// subscriber, per node that serves channels of its waiters. It places each
// channel on the subscriber of the node serving its slot, and moves it when
// the slot leaves the node (Redis then ends the subscription, or answers
// MOVED). A failover keeps a subscriber's channels together: go-redis
// reconnects it to the node that serves their slots now.
//
// On servers older than Redis 7, where the scripts announce with PUBLISH,
// the router places every channel on one plain subscriber.
type shardRouter struct {
	m  *Mutex
	cc *redis.ClusterClient

	// Guarded by m.mu.
	want   map[string]bool        // channels subscribed to, or to be
	placed map[string]*subscriber // where each wanted channel went
	// renew holds the channels waiting to be placed again after their slot
	// moved, which tells the mode to look again once they are.
	renew  map[string]bool
	queued []string
	nodes  map[string]*subscriber // by node address
	plain  *subscriber            // for servers without sharded pub/sub
	legacy int                    // 0 unknown, 1 sharded, 2 plain
	// checking holds the subscribers whose connection failed, for run to
	// check.
	checking map[*subscriber]bool

	kick    chan struct{}
	closing sync.WaitGroup  // subscribers being closed
	ctx     context.Context // cancelled by close
	cancel  context.CancelFunc
	done    chan struct{}
}

func newShardRouter(m *Mutex, cc *redis.ClusterClient) *shardRouter {
	ctx, cancel := context.WithCancel(context.Background())
	r := &shardRouter{
		m:      m,
		cc:     cc,
		want:   make(map[string]bool),
		placed: make(map[string]*subscriber),
		renew:  make(map[string]bool),
		nodes:  make(map[string]*subscriber),
		kick:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go r.run()
	return r
}

func (r *shardRouter) subscribeLocked(channels []string) {
	for _, c := range channels {
		r.want[c] = true
		delete(r.renew, c)
	}
	r.queued = append(r.queued, channels...)
	r.kickRun()
}

func (r *shardRouter) unsubscribeLocked(channels []string) {
	for _, c := range channels {
		delete(r.want, c)
		delete(r.renew, c)
		if s := r.placed[c]; s != nil {
			delete(r.placed, c)
			s.unsubscribeLocked([]string{c})
		}
	}
}

func (r *shardRouter) kickRun() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// moved takes channels off s, whose node no longer serves their slots, and
// places them again.
func (r *shardRouter) moved(s *subscriber, channels []string) {
	m := r.m
	m.mu.Lock()
	var gone []string
	for _, c := range channels {
		if r.placed[c] != s || !r.want[c] {
			continue
		}
		delete(r.placed, c)
		if !s.pending[c] {
			r.renew[c] = true
		}
		gone = append(gone, c)
	}
	if len(gone) > 0 {
		s.forgetLocked(gone)
		r.queued = append(r.queued, gone...)
	}
	m.mu.Unlock()
	if len(gone) > 0 {
		r.cc.ReloadState(r.ctx)
		r.kickRun()
	}
}

// failing is told by s that its connection failed: its node may be down
// for good, its slots served by another node after a failover. The
// channels of s whose slots another node serves now, once go-redis has
// reloaded the cluster's layout, move there; a subscriber left without
// channels is closed.
func (r *shardRouter) failing(s *subscriber) {
	r.cc.ReloadState(r.ctx)
	m := r.m
	m.mu.Lock()
	if r.nodes[s.addr] == s && !r.checking[s] {
		if r.checking == nil {
			r.checking = make(map[*subscriber]bool)
		}
		r.checking[s] = true
		r.kickRun()
	}
	m.mu.Unlock()
}

// check moves the channels of s that its node no longer serves, or closes
// s if it has none.
func (r *shardRouter) check(s *subscriber) {
	m := r.m
	m.mu.Lock()
	var channels []string
	for c, ok := range r.placed {
		if ok == s {
			channels = append(channels, c)
		}
	}
	if len(channels) == 0 && r.nodes[s.addr] == s {
		delete(r.nodes, s.addr)
		m.mu.Unlock()
		// Closing may wait for a dial to a node that does not answer:
		// not in the way of other placements.
		r.closing.Add(1)
		go func() {
			defer r.closing.Done()
			_ = s.close()
		}()
		return
	}
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
	defer cancel()
	var gone []string
	for _, c := range channels {
		node, err := r.cc.MasterForKey(ctx, c)
		if err == nil && node.Options().Addr != s.addr {
			gone = append(gone, c)
		}
	}
	if len(gone) > 0 {
		r.moved(s, gone)
	}
}

// run places the queued channels, retrying those whose node cannot be
// found yet.
func (r *shardRouter) run() {
	defer close(r.done)
	b := backoff.Backoff{Min: 10 * time.Millisecond, Max: time.Second, Factor: 2}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		}
		r.m.mu.Lock()
		queued := r.queued
		r.queued = nil
		checking := r.checking
		r.checking = nil
		r.m.mu.Unlock()
		for s := range checking {
			r.check(s)
		}
		var retry []string
		for _, c := range queued {
			if !r.place(c) {
				retry = append(retry, c)
			}
		}
		if len(retry) == 0 {
			b.Reset()
			continue
		}
		r.m.mu.Lock()
		r.queued = append(r.queued, retry...)
		r.m.mu.Unlock()
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(b.Duration()):
		}
		r.kickRun()
	}
}

// place subscribes to channel on the subscriber of the node that serves
// its slot, unless it is no longer wanted or placed already. It reports
// false if the node could not be found.
func (r *shardRouter) place(channel string) bool {
	m := r.m
	m.mu.Lock()
	skip := !r.want[channel] || r.placed[channel] != nil
	m.mu.Unlock()
	if skip {
		return true
	}
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
	defer cancel()
	node, err := r.cc.MasterForKey(ctx, channel)
	if err != nil {
		return false
	}
	if r.legacy == 0 {
		info, err := node.Info(ctx, "server").Result()
		if err != nil {
			return false
		}
		r.legacy = 2
		if redisMajor(info) >= 7 {
			r.legacy = 1
		}
	}
	addr := node.Options().Addr
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || !r.want[channel] || r.placed[channel] != nil {
		return true
	}
	var s *subscriber
	if r.legacy == 2 {
		if r.plain == nil {
			r.plain = newSubscriber(m, r.cc.Subscribe(context.Background()), nil)
		}
		s = r.plain
	} else if s = r.nodes[addr]; s == nil {
		// The node's own client connects to that node only, whatever
		// channels the connection has, or none.
		s = newSubscriber(m, node.SSubscribe(context.Background()), r)
		s.addr = addr
		r.nodes[addr] = s
	}
	r.placed[channel] = s
	if r.renew[channel] {
		delete(r.renew, channel)
		s.resubscribeLocked([]string{channel})
	} else {
		s.subscribeLocked([]string{channel})
	}
	return true
}

// redisMajor returns the major version in the reply of INFO server, or 0.
func redisMajor(info string) int {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			major, _, _ := strings.Cut(v, ".")
			n, _ := strconv.Atoi(major)
			return n
		}
	}
	return 0
}

func (r *shardRouter) close() error {
	r.cancel()
	<-r.done
	r.m.mu.Lock()
	subs := make([]*subscriber, 0, len(r.nodes)+1)
	for _, s := range r.nodes {
		subs = append(subs, s)
	}
	if r.plain != nil {
		subs = append(subs, r.plain)
	}
	r.m.mu.Unlock()
	errs := make([]error, len(subs))
	for i, s := range subs {
		r.closing.Add(1)
		go func() {
			defer r.closing.Done()
			errs[i] = s.close()
		}()
	}
	r.closing.Wait()
	return errors.Join(errs...)
}
