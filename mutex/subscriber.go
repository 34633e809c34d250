package mutex

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

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
	go s.read()
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
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				pctx, cancel := context.WithTimeout(ctx, pubsubIdle)
				_ = s.ps.Ping(pctx)
				cancel()
				continue
			}
			// go-redis reconnects on the next receive; wait a little
			// while Redis is unreachable.
			failures++
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
			if channel == m.wakeChannel {
				close(m.wakeReady)
			} else if q := m.queues[channel]; q != nil {
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
