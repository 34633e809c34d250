package redistest

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy in front of a server, for injecting network faults:
// it can stall traffic (Pause) and drop connections (CutAll). Clients
// connect to Addr; each connection is forwarded to the target.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // canceled by Close, aborts dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop and connection handlers

	mu      sync.Mutex
	closed  bool
	paused  bool
	resumed chan struct{} // closed by Resume; replaced by each Pause
	conns   map[*proxyConn]struct{}
}

type proxyConn struct {
	client   net.Conn
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{} // closed by close
	finished chan struct{} // closed when the handler has returned
	once     sync.Once

	mu     sync.Mutex
	closed bool
	server net.Conn
}

// NewProxy starts a proxy to target ("host:port") listening on a free
// 127.0.0.1 port. It is closed when the test completes.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*proxyConn]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the address clients connect to, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Pause stops forwarding bytes in both directions, on current and new
// connections, which stay open. Data already handed to the other side
// before the call may still arrive.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		p.paused = true
		p.resumed = make(chan struct{})
	}
}

// Resume forwards bytes again, starting with those held back while paused.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resumed)
	}
}

// CutAll closes all current connections, on both sides, and waits until
// they are no longer served. The proxy keeps accepting new connections.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	for _, pc := range conns {
		pc.close()
	}
	for _, pc := range conns {
		<-pc.finished
	}
}

// Close stops the proxy: it stops listening, closes all connections and
// waits for its goroutines to exit. It may be called more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.cancel()
	p.CutAll()
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		ctx, cancel := context.WithCancel(p.ctx)
		pc := &proxyConn{
			client:   c,
			ctx:      ctx,
			cancel:   cancel,
			done:     make(chan struct{}),
			finished: make(chan struct{}),
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			cancel()
			_ = c.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(pc)
	}
}

func (p *Proxy) handle(pc *proxyConn) {
	defer p.wg.Done()
	defer close(pc.finished)
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	defer pc.close()

	var d net.Dialer
	ctx, cancel := context.WithTimeout(pc.ctx, 5*time.Second)
	server, err := d.DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		return
	}
	if !pc.setServer(server) {
		_ = server.Close()
		return
	}
	var pumps sync.WaitGroup
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		p.pump(pc, server, pc.client)
	}()
	p.pump(pc, pc.client, server)
	pumps.Wait()
}

// pump copies src to dst, holding data back while the proxy is paused.
// When either side fails or closes, the whole connection is closed.
func (p *Proxy) pump(pc *proxyConn, dst, src net.Conn) {
	defer pc.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitForwarding(pc) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitForwarding waits until the proxy is not paused. It reports false if
// the connection was closed meanwhile.
func (p *Proxy) waitForwarding(pc *proxyConn) bool {
	for {
		p.mu.Lock()
		paused, resumed := p.paused, p.resumed
		p.mu.Unlock()
		if !paused {
			return true
		}
		select {
		case <-resumed:
		case <-pc.done:
			return false
		}
	}
}

func (pc *proxyConn) setServer(c net.Conn) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return false
	}
	pc.server = c
	return true
}

func (pc *proxyConn) close() {
	pc.once.Do(func() {
		pc.cancel()
		close(pc.done)
		_ = pc.client.Close()
		pc.mu.Lock()
		pc.closed = true
		server := pc.server
		pc.mu.Unlock()
		if server != nil {
			_ = server.Close()
		}
	})
}
