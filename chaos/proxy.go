package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a TCP proxy on a loopback port in front of Redis, through which
// the clients of the proxy faults connect. It forwards bytes unchanged,
// and on demand delays them (SetLatency), closes every connection (Reset)
// or swallows replies (DropReplies).
type Proxy struct {
	Addr   string
	target string
	ln     net.Listener
	wg     sync.WaitGroup
	// latency is the maximum delay of a chunk, in nanoseconds; 0 forwards
	// at once.
	latency atomic.Int64
	dropped atomic.Int64 // requests whose replies were swallowed

	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	closed bool
}

// proxyConn is one client connection and its connection to Redis.
type proxyConn struct {
	p              *Proxy
	client, server net.Conn
	once           sync.Once
	// active is when the client last sent anything (Unix nanoseconds).
	active atomic.Int64
	// armed: the next request is forwarded, and from then on nothing of
	// what Redis sends reaches the client (swallow) until the connection
	// is closed, hold later.
	armed   atomic.Bool
	swallow atomic.Bool
	hold    atomic.Int64
	timer   atomic.Pointer[time.Timer]
}

// chunk is what one read returned, and when it may be written on.
type chunk struct {
	b   []byte
	due time.Time
}

// StartProxy listens on a free loopback port and forwards every connection
// to target.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			_ = client.Close()
			continue
		}
		c := &proxyConn{p: p, client: client, server: server}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go c.pipe(server, client, true)
		go c.pipe(client, server, false)
	}
}

// pipe copies src to dst: this goroutine reads, another writes, so a
// delayed chunk does not hold up reading, and chunks keep their order.
func (c *proxyConn) pipe(dst, src net.Conn, toServer bool) {
	defer c.p.wg.Done()
	ch := make(chan chunk, 64)
	c.p.wg.Add(1)
	go func() {
		defer c.p.wg.Done()
		defer c.close()
		for ck := range ch {
			time.Sleep(time.Until(ck.due))
			if !toServer && c.swallow.Load() {
				continue
			}
			if _, err := dst.Write(ck.b); err != nil {
				c.close()
				for range ch {
				}
				return
			}
		}
	}()
	defer close(ch)
	var last time.Time
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if toServer {
				c.active.Store(time.Now().UnixNano())
				if c.armed.CompareAndSwap(true, false) {
					c.startSwallow()
				}
			}
			due := time.Now()
			if max := c.p.latency.Load(); max > 0 {
				due = due.Add(rand.N(time.Duration(max) + 1))
			}
			if due.Before(last) {
				due = last
			}
			last = due
			ch <- chunk{b: bytes.Clone(buf[:n]), due: due}
		}
		if err != nil {
			return
		}
	}
}

// startSwallow stops replies to the client before the request that
// triggered it is forwarded, and closes the connection after hold.
func (c *proxyConn) startSwallow() {
	c.swallow.Store(true)
	c.p.dropped.Add(1)
	c.timer.Store(time.AfterFunc(time.Duration(c.hold.Load()), c.close))
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		_ = c.client.Close()
		_ = c.server.Close()
		if t := c.timer.Load(); t != nil {
			t.Stop()
		}
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

// SetLatency delays every chunk forwarded from now on, in both directions,
// by a random duration in [0, max]; 0 forwards at once.
func (p *Proxy) SetLatency(max time.Duration) { p.latency.Store(int64(max)) }

// Conns returns the number of open proxied connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Proxy) snapshot() []*proxyConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	return cs
}

// Reset closes every proxied connection, both ends at once, and returns
// how many it closed.
func (p *Proxy) Reset() int {
	cs := p.snapshot()
	for _, c := range cs {
		c.close()
	}
	return len(cs)
}

// DropReplies picks, among the connections on which the client sent
// anything within the last hold (idle pooled connections are left out),
// between one and half of them (at least one) at random, and arms them:
// the next request on an armed connection reaches Redis, but its reply and
// everything after it is swallowed for hold, then the connection is
// closed. Connections armed by the previous call that sent nothing since
// are disarmed. It returns the number of connections armed.
func (p *Proxy) DropReplies(rng *rand.Rand, hold time.Duration) int {
	var active []*proxyConn
	since := time.Now().Add(-hold).UnixNano()
	for _, c := range p.snapshot() {
		c.armed.Store(false)
		if c.active.Load() >= since && !c.swallow.Load() {
			active = append(active, c)
		}
	}
	if len(active) == 0 {
		return 0
	}
	n := 1 + rng.IntN((len(active)+1)/2)
	rng.Shuffle(len(active), func(i, j int) { active[i], active[j] = active[j], active[i] })
	for _, c := range active[:n] {
		c.hold.Store(int64(hold))
		c.armed.Store(true)
	}
	return n
}

// Disarm disarms every connection that DropReplies armed and that has not
// sent its next request yet; connections already swallowing replies still
// close when their hold ends.
func (p *Proxy) Disarm() {
	for _, c := range p.snapshot() {
		c.armed.Store(false)
	}
}

// Dropped returns the number of requests whose replies were swallowed.
func (p *Proxy) Dropped() int { return int(p.dropped.Load()) }

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
