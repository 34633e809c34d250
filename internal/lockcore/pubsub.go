package lockcore

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/jpillora/backoff"
	"github.com/redis/go-redis/v9"
)

// Handler receives the messages of a channel, and with confirmed set (and
// an empty payload) each confirmation of a subscription to it: the first
// one, and those that follow a reconnect, after which messages may have
// been lost. It runs on the reader goroutine and must not block.
type Handler func(payload string, confirmed bool)

// PubSub is one pub/sub connection shared by any number of subscriptions.
// Subscribe and Unsubscribe never block on the network: a writer goroutine
// sends the requests in order, and a reader goroutine hands messages to
// the handlers. go-redis reconnects a broken connection and subscribes
// again to every channel; the confirmations that follow reach the handlers.
type PubSub struct {
	client redis.UniversalClient

	mu       sync.Mutex
	ps       *redis.PubSub // created with the first subscription
	handlers map[string][]*Subscription
	ops      []string // channels whose subscription state may have changed
	closed   bool
	kick     chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
}

// Subscription is one handler's subscription to a channel.
type Subscription struct {
	ps      *PubSub
	channel string
	h       Handler
}

// NewPubSub returns a PubSub on client; it connects with its first
// subscription.
func NewPubSub(client redis.UniversalClient) *PubSub {
	return &PubSub{
		client:   client,
		handlers: make(map[string][]*Subscription),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
}

// Subscribe adds h to the handlers of channel. It returns nil after Close.
func (p *PubSub) Subscribe(channel string, h Handler) *Subscription {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if p.ps == nil {
		p.ps = p.client.Subscribe(context.Background())
		p.wg.Add(2)
		go p.write()
		go p.read()
	}
	s := &Subscription{ps: p, channel: channel, h: h}
	p.handlers[channel] = append(p.handlers[channel], s)
	// Subscribe again even if the channel has handlers already: the
	// confirmation is what tells the new handler that it receives
	// messages from now on (the others take it as a harmless resync).
	p.queueLocked(channel)
	return s
}

// Unsubscribe removes the subscription. It may be called more than once,
// and on a nil Subscription.
func (s *Subscription) Unsubscribe() {
	if s == nil {
		return
	}
	p := s.ps
	p.mu.Lock()
	defer p.mu.Unlock()
	hs := p.handlers[s.channel]
	for i, x := range hs {
		if x == s {
			hs = append(hs[:i:i], hs[i+1:]...)
			break
		}
	}
	if len(hs) == 0 {
		delete(p.handlers, s.channel)
		p.queueLocked(s.channel)
		return
	}
	p.handlers[s.channel] = hs
}

func (p *PubSub) queueLocked(channel string) {
	p.ops = append(p.ops, channel)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// write sends SUBSCRIBE and UNSUBSCRIBE requests for the channels whose
// wanted state may have changed, in order, as they are wanted at the time
// of writing. A failed write makes go-redis reconnect, which subscribes
// again to the channels it knows of, so a SUBSCRIBE that failed is still
// made; the writer also tries it again.
func (p *PubSub) write() {
	defer p.wg.Done()
	ctx := context.Background()
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
		p.mu.Lock()
		ops := p.ops
		p.ops = nil
		p.mu.Unlock()
		for _, ch := range ops {
			b := backoff.Backoff{Min: 10 * time.Millisecond, Max: time.Second, Factor: 2}
			for {
				p.mu.Lock()
				want := len(p.handlers[ch]) > 0
				p.mu.Unlock()
				var err error
				if want {
					err = p.ps.Subscribe(ctx, ch)
				} else {
					err = p.ps.Unsubscribe(ctx, ch)
				}
				if err == nil || !want || errors.Is(err, redis.ErrClosed) {
					break
				}
				select {
				case <-p.stop:
					return
				case <-time.After(b.Duration()):
				}
			}
		}
	}
}

// idle is how long the reader waits for a message before it pings the
// connection, which makes go-redis reconnect if it is broken.
const idle = 5 * time.Second

func (p *PubSub) read() {
	defer p.wg.Done()
	ctx := context.Background()
	failures := 0
	for {
		msg, err := p.ps.ReceiveTimeout(ctx, idle)
		if err != nil {
			select {
			case <-p.stop:
				return
			default:
			}
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				pctx, cancel := context.WithTimeout(ctx, idle)
				_ = p.ps.Ping(pctx)
				cancel()
				continue
			}
			// go-redis reconnects on the next receive; wait a little
			// while Redis is unreachable.
			failures++
			select {
			case <-p.stop:
				return
			case <-time.After(min(10*time.Millisecond<<min(failures, 7), time.Second)):
			}
			continue
		}
		failures = 0
		switch msg := msg.(type) {
		case *redis.Message:
			p.dispatch(msg.Channel, msg.Payload, false)
		case *redis.Subscription:
			if msg.Kind == "subscribe" {
				p.dispatch(msg.Channel, "", true)
			}
		}
	}
}

func (p *PubSub) dispatch(channel, payload string, confirmed bool) {
	p.mu.Lock()
	hs := append([]*Subscription(nil), p.handlers[channel]...)
	p.mu.Unlock()
	for _, s := range hs {
		s.h(payload, confirmed)
	}
}

// Close ends every subscription, closes the connection and waits for the
// goroutines to exit.
func (p *PubSub) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ps := p.ps
	p.handlers = make(map[string][]*Subscription)
	p.mu.Unlock()
	close(p.stop)
	var err error
	if ps != nil {
		err = ps.Close()
	}
	p.wg.Wait()
	return err
}
