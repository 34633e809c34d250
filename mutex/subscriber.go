package mutex

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jpillora/backoff"
	"github.com/redis/go-redis/v9"
)

// subscriber owns the one pub/sub connection of a Mutex. Subscribe and
// unsubscribe requests are queued under Mutex.mu, in order, and written by
// the subscriber's writer goroutine so that no lock is held across network
// I/O; its reader goroutine hands messages to the Mutex's mode.
//
// Confirmations are not counted: a subscribe request may be written into a
// dead connection and never be confirmed, while go-redis subscribes again
// to every channel when it reconnects. A confirmation of a channel that a
// request waits for confirms it, whichever request it answers; any other
// confirmation comes from a reconnect, after which messages may have been
// lost, and the mode is told to look again.
type subscriber struct {
	m  *Mutex
	ps *redis.PubSub
	// sharded subscriptions (SSUBSCRIBE) are made one slot per request,
	// through router, which moves a channel whose slot left the node.
	sharded bool
	router  *shardRouter
	addr    string // the node of a sharded subscriber

	// Guarded by m.mu.
	ops     []subOp
	want    map[string]bool // channels subscribed to, or to be
	pending map[string]bool // wanted channels not confirmed yet
	// unsubscribing counts, per channel, the UNSUBSCRIBEs written on the
	// current connection and not confirmed yet: a subscribe confirmation
	// read before them answers an older SUBSCRIBE, whose subscription they
	// end.
	unsubscribing map[string]int

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

type subOp struct {
	subscribe bool
	channels  []string
	// forget ends sharded subscriptions that Redis ended already, or
	// whose slot the node no longer serves, so that go-redis does not
	// subscribe to them again; their replies are not awaited.
	forget bool
}

// newSubscriber returns the subscriber of the pub/sub connection ps; with
// router, its subscriptions are sharded ones.
func newSubscriber(m *Mutex, ps *redis.PubSub, router *shardRouter) *subscriber {
	s := &subscriber{
		m:             m,
		ps:            ps,
		sharded:       router != nil,
		router:        router,
		want:          make(map[string]bool),
		pending:       make(map[string]bool),
		unsubscribing: make(map[string]int),
		kick:          make(chan struct{}, 1),
		stop:          make(chan struct{}),
	}
	s.wg.Add(2)
	go s.write()
	go s.read()
	return s
}

// subscribeLocked queues a subscription to channels. m.mu must be held.
func (s *subscriber) subscribeLocked(channels []string) {
	for _, c := range channels {
		s.want[c] = true
		s.pending[c] = true
	}
	s.queue(subOp{subscribe: true, channels: channels})
}

// resubscribeLocked queues a subscription to channels, whose messages may
// have been missed since an earlier subscription ended: its confirmation
// tells the mode to look again. m.mu must be held.
func (s *subscriber) resubscribeLocked(channels []string) {
	for _, c := range channels {
		s.want[c] = true
	}
	s.queue(subOp{subscribe: true, channels: channels})
}

// forgetLocked drops channels whose slot moved to another node (see
// subOp.forget). m.mu must be held.
func (s *subscriber) forgetLocked(channels []string) {
	for _, c := range channels {
		delete(s.want, c)
		delete(s.pending, c)
	}
	s.queue(subOp{channels: channels, forget: true})
}

// unsubscribeLocked queues the end of a subscription, and forgets that
// its confirmation is awaited. m.mu must be held.
func (s *subscriber) unsubscribeLocked(channels []string) {
	for _, c := range channels {
		delete(s.want, c)
		delete(s.pending, c)
	}
	s.queue(subOp{channels: channels})
}

func (s *subscriber) queue(op subOp) {
	s.ops = append(s.ops, op)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *subscriber) write() {
	defer s.wg.Done()
	ctx := context.Background()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		s.m.mu.Lock()
		ops := s.ops
		s.ops = nil
		// Write what is still wanted now: a subscription asked for and
		// given up since, or ended and asked for again, is left alone.
		for i, op := range ops {
			ops[i].channels = s.stillLocked(op)
		}
		s.m.mu.Unlock()
		for _, op := range s.split(ops) {
			if len(op.channels) == 0 {
				continue
			}
			if op.forget {
				_ = s.unsubscribe(ctx, op.channels)
				continue
			}
			if !op.subscribe {
				// Counted before the write, which its confirmation may
				// overtake.
				s.countUnsubscribes(op.channels, 1)
				if s.unsubscribe(ctx, op.channels) != nil {
					s.countUnsubscribes(op.channels, -1)
				}
				continue
			}
			// A failed write makes go-redis reconnect, and subscribe again
			// to the channels it knew of before this request: write the
			// request again until it goes through, or is no longer wanted.
			b := backoff.Backoff{Min: 10 * time.Millisecond, Max: time.Second, Factor: 2}
			for s.subscribe(ctx, op.channels) != nil {
				select {
				case <-s.stop:
					return
				case <-time.After(b.Duration()):
				}
				s.m.mu.Lock()
				op.channels = s.stillLocked(op)
				s.m.mu.Unlock()
				if len(op.channels) == 0 {
					break
				}
			}
		}
	}
}

func (s *subscriber) subscribe(ctx context.Context, channels []string) error {
	if s.sharded {
		return s.ps.SSubscribe(ctx, channels...)
	}
	return s.ps.Subscribe(ctx, channels...)
}

func (s *subscriber) unsubscribe(ctx context.Context, channels []string) error {
	if s.sharded {
		return s.ps.SUnsubscribe(ctx, channels...)
	}
	return s.ps.Unsubscribe(ctx, channels...)
}

// split divides sharded requests into requests of one slot each, as
// Redis refuses the channels of several slots in one request.
func (s *subscriber) split(ops []subOp) []subOp {
	if !s.sharded {
		return ops
	}
	var out []subOp
	for _, op := range ops {
		bySlot := make(map[int][]string)
		var slots []int
		for _, c := range op.channels {
			slot := channelSlot(c)
			if _, ok := bySlot[slot]; !ok {
				slots = append(slots, slot)
			}
			bySlot[slot] = append(bySlot[slot], c)
		}
		for _, slot := range slots {
			out = append(out, subOp{subscribe: op.subscribe, channels: bySlot[slot], forget: op.forget})
		}
	}
	return out
}

// countUnsubscribes adds d to the unconfirmed UNSUBSCRIBEs of channels.
func (s *subscriber) countUnsubscribes(channels []string, d int) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	for _, c := range channels {
		if s.unsubscribing[c] += d; s.unsubscribing[c] <= 0 {
			delete(s.unsubscribing, c)
		}
	}
}

// stillLocked returns the channels of op whose subscription is still to be
// made, or still to be ended. m.mu must be held.
func (s *subscriber) stillLocked(op subOp) []string {
	var keep []string
	for _, c := range op.channels {
		if s.want[c] == op.subscribe {
			keep = append(keep, c)
		}
	}
	return keep
}

// pubsubIdle is how long the reader waits for a message before it pings
// the connection, which makes go-redis reconnect (and subscribe again) if
// the connection is broken.
const pubsubIdle = 5 * time.Second

// read receives on the pub/sub connection itself, rather than through
// go-redis's Channel, to save a goroutine hop on every wake-up.
func (s *subscriber) read() {
	defer s.wg.Done()
	ctx := context.Background()
	failures := 0
	for {
		msg, err := s.ps.ReceiveTimeout(ctx, pubsubIdle)
		if err != nil {
			select {
			case <-s.stop:
				return
			default:
			}
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			if s.sharded && s.refused(err) {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				pctx, cancel := context.WithTimeout(ctx, pubsubIdle)
				_ = s.ps.Ping(pctx)
				cancel()
				continue
			}
			// go-redis reconnects on the next receive; wait a little
			// while Redis is unreachable. Confirmations still due on the
			// old connection will not come.
			s.m.mu.Lock()
			clear(s.unsubscribing)
			s.m.mu.Unlock()
			failures++
			if s.sharded {
				s.router.failing(s)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(min(10*time.Millisecond<<min(failures, 7), time.Second)):
			}
			continue
		}
		failures = 0
		switch msg := msg.(type) {
		case *redis.Message:
			s.m.mode.message(msg.Channel, msg.Payload)
		case *redis.Subscription:
			switch msg.Kind {
			case "subscribe", "ssubscribe":
				s.confirmed(msg.Channel)
			case "unsubscribe":
				s.countUnsubscribes([]string{msg.Channel}, -1)
			case "sunsubscribe":
				s.sunsubscribed(msg.Channel)
			}
		}
	}
}

// confirmed handles a subscription confirmed by Redis.
func (s *subscriber) confirmed(channel string) {
	m := s.m
	m.mu.Lock()
	if s.unsubscribing[channel] > 0 {
		// An older subscription, which an UNSUBSCRIBE ends next.
		m.mu.Unlock()
		return
	}
	if s.pending[channel] {
		delete(s.pending, channel)
		m.mode.subscribedLocked(channel)
		m.mu.Unlock()
		return
	}
	wanted := s.want[channel]
	m.mu.Unlock()
	if wanted {
		m.mode.message(channel, "")
	}
}

// sunsubscribed handles the end of a sharded subscription: the reply to
// an SUNSUBSCRIBE, or, if none was written, Redis ending it because the
// channel's slot left the node; the router then subscribes to the channel
// where its slot went.
func (s *subscriber) sunsubscribed(channel string) {
	m := s.m
	m.mu.Lock()
	if s.unsubscribing[channel] > 0 {
		if s.unsubscribing[channel]--; s.unsubscribing[channel] == 0 {
			delete(s.unsubscribing, channel)
		}
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	s.router.moved(s, []string{channel})
}

// refused handles an error reply on a sharded pub/sub connection: MOVED or
// ASK when a request went to a node that no longer serves the slot, and
// CROSSSLOT when go-redis, after a reconnect, subscribed again to the
// channels of several slots in one request. It reports whether err was
// such a reply.
func (s *subscriber) refused(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	m := s.m
	switch {
	case strings.HasPrefix(msg, "MOVED "), strings.HasPrefix(msg, "ASK "):
		slot := -1
		if f := strings.Fields(msg); len(f) > 1 {
			slot, _ = strconv.Atoi(f[1])
		}
		m.mu.Lock()
		var gone []string
		for c := range s.want {
			if slot < 0 || channelSlot(c) == slot {
				gone = append(gone, c)
			}
		}
		m.mu.Unlock()
		s.router.moved(s, gone)
		return true
	case strings.HasPrefix(msg, "CROSSSLOT"):
		// Nothing was subscribed: subscribe again to every channel, one
		// slot per request. A channel still pending stays so.
		m.mu.Lock()
		var all []string
		for c := range s.want {
			all = append(all, c)
		}
		if len(all) > 0 {
			s.resubscribeLocked(all)
		}
		m.mu.Unlock()
		return true
	}
	return false
}

func (s *subscriber) close() error {
	close(s.stop)
	err := s.ps.Close()
	s.wg.Wait()
	return err
}
