package mutex

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// subscriber owns the one pub/sub connection of a Mutex. Subscribe and
// unsubscribe requests are queued under Mutex.mu, in order, and written by
// the subscriber's writer goroutine so that no lock is held across network
// I/O; its reader goroutine turns release announcements into wake-ups.
type subscriber struct {
	m  *Mutex
	ps *redis.PubSub

	// Guarded by m.mu.
	ops     []subOp
	pending map[string]int // subscribe requests not yet confirmed, by channel

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

type subOp struct {
	subscribe bool
	channels  []string
}

func newSubscriber(m *Mutex) *subscriber {
	s := &subscriber{
		m:       m,
		ps:      m.client.Subscribe(context.Background()),
		pending: make(map[string]int),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	s.wg.Add(2)
	go s.write()
	go s.read(s.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)))
	return s
}

// subscribe queues a subscription to channels. m.mu must be held.
func (s *subscriber) subscribe(channels []string) {
	for _, c := range channels {
		s.pending[c]++
	}
	s.queue(subOp{subscribe: true, channels: channels})
}

// unsubscribe queues the end of a subscription. m.mu must be held.
func (s *subscriber) unsubscribe(channels []string) {
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
		s.m.mu.Unlock()
		for _, op := range ops {
			// A failed write leaves the channel in the PubSub's set, and
			// go-redis subscribes again when it reconnects; waiters re-check
			// on their timers meanwhile.
			if op.subscribe {
				_ = s.ps.Subscribe(ctx, op.channels...)
			} else {
				_ = s.ps.Unsubscribe(ctx, op.channels...)
			}
		}
	}
}

func (s *subscriber) read(ch <-chan any) {
	defer s.wg.Done()
	for msg := range ch {
		switch msg := msg.(type) {
		case *redis.Message:
			s.m.released(msg.Channel, msg.Payload)
		case *redis.Subscription:
			if msg.Kind == "subscribe" {
				s.confirmed(msg.Channel)
			}
		}
	}
}

// confirmed handles a subscription confirmed by Redis. A confirmation that
// no request waits for comes from a reconnect: announcements may have been
// lost meanwhile, so the head waiter re-checks.
func (s *subscriber) confirmed(channel string) {
	m := s.m
	m.mu.Lock()
	if n := s.pending[channel]; n > 0 {
		if n == 1 {
			delete(s.pending, channel)
			if q := m.queues[channel]; q != nil {
				close(q.subscribed)
			}
		} else {
			s.pending[channel] = n - 1
		}
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.released(channel, "")
}

func (s *subscriber) close() error {
	close(s.stop)
	err := s.ps.Close()
	s.wg.Wait()
	return err
}
