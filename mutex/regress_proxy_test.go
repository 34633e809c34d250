package mutex_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/mutex"
)

// faultProxy is a TCP proxy in front of Redis that acts on single commands:
// it reads the commands a client sends, and a command matched by an armed
// rule gets its rule's fault. Each rule fires once, on the first command it
// matches; every other command is forwarded unchanged.
type faultProxy struct {
	target string
	ln     net.Listener
	stop   chan struct{} // closed by close
	wg     sync.WaitGroup

	mu     sync.Mutex
	rules  []*faultRule
	conns  map[*faultConn]struct{}
	closed bool
	down   bool // see setDown
	// stalled tells, for pub/sub connections (true) and the others
	// (false), whether forwarding is stopped; see stall.
	stalled map[bool]bool
	cond    *sync.Cond // signalled when stalled changes or a connection closes
}

type faultKind int

const (
	// dropReply forwards the command, waits for Redis to answer, throws the
	// answer away and cuts the connection: the command ran, and the client
	// sees its connection fail.
	dropReply faultKind = iota
	// holdBack keeps the command, and everything sent after it on the same
	// connection, until the rule is released (then it is forwarded, even if
	// the client has gone meanwhile) or cut (then the connection is closed
	// and nothing of it reaches Redis).
	holdBack
)

// faultRule is one armed fault.
type faultRule struct {
	match func(args []string) bool
	kind  faultKind

	hit      chan struct{} // closed when the rule fired
	answered chan struct{} // closed when Redis answered the matched command
	release  chan struct{} // holdBack: forward
	cut      chan struct{} // holdBack: close without forwarding
	relOnce  sync.Once
	cutOnce  sync.Once
	ansOnce  sync.Once
	fired    bool // guarded by faultProxy.mu
}

// Hit is closed once the rule matched a command.
func (r *faultRule) Hit() <-chan struct{} { return r.hit }

// Answered is closed once Redis answered the matched command, that is once
// it ran.
func (r *faultRule) Answered() <-chan struct{} { return r.answered }

// Release forwards a held-back command and what followed it.
func (r *faultRule) Release() { r.relOnce.Do(func() { close(r.release) }) }

// Cut closes a held-back connection without forwarding anything more.
func (r *faultRule) Cut() { r.cutOnce.Do(func() { close(r.cut) }) }

type faultConn struct {
	p              *faultProxy
	client, server net.Conn
	once           sync.Once
	mu             sync.Mutex
	// awaiting is the rule whose command was the last one forwarded with
	// a fault; the next bytes from Redis are its answer.
	awaiting *faultRule
	holding  bool // a holdBack rule holds the connection; guarded by faultProxy.mu
	pubsub   bool // a SUBSCRIBE went through it; guarded by faultProxy.mu
	dead     bool // closed; guarded by faultProxy.mu
}

func (c *faultConn) close() {
	c.once.Do(func() {
		_ = c.client.Close()
		_ = c.server.Close()
		c.p.mu.Lock()
		c.dead = true
		c.p.cond.Broadcast()
		c.p.mu.Unlock()
	})
}

// waitForwarding waits while the proxy stalls connections of c's kind.
func (c *faultConn) waitForwarding() {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	for c.p.stalled[c.pubsub] && !c.dead && !c.p.closed {
		c.p.cond.Wait()
	}
}

// newFaultProxy starts a faultProxy to target on a free port. It is closed
// when the test completes.
func newFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{target: target, ln: ln, stop: make(chan struct{}), conns: make(map[*faultConn]struct{}),
		stalled: make(map[bool]bool)}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// client returns a go-redis client through the proxy, with go-redis's
// default options changed by mods, closed when the test completes.
func (p *faultProxy) client(t testing.TB, mods ...func(*redis.Options)) *redis.Client {
	t.Helper()
	opt := &redis.Options{Addr: p.Addr()}
	for _, mod := range mods {
		mod(opt)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// arm adds a rule that fires on the first command for which match holds.
func (p *faultProxy) arm(kind faultKind, match func(args []string) bool) *faultRule {
	r := &faultRule{
		match:    match,
		kind:     kind,
		hit:      make(chan struct{}),
		answered: make(chan struct{}),
		release:  make(chan struct{}),
		cut:      make(chan struct{}),
	}
	p.mu.Lock()
	p.rules = append(p.rules, r)
	p.mu.Unlock()
	return r
}

// stall stops forwarding, in both directions, on the pub/sub connections
// (pubsub true) or on the other connections; stalled false forwards again,
// starting with what was held back.
func (p *faultProxy) stall(pubsub, stalled bool) {
	p.mu.Lock()
	p.stalled[pubsub] = stalled
	p.cond.Broadcast()
	p.mu.Unlock()
}

// setDown makes Redis unreachable through the proxy, or reachable again:
// while down, the proxy closes every new connection at once, and going down
// cuts the current ones, except those held back by a rule.
func (p *faultProxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.cut(false)
	}
}

// cutAll closes every current connection.
func (p *faultProxy) cutAll() { p.cut(true) }

func (p *faultProxy) cut(held bool) {
	p.mu.Lock()
	conns := make([]*faultConn, 0, len(p.conns))
	for c := range p.conns {
		if held || !c.holding {
			conns = append(conns, c)
		}
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

func (p *faultProxy) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	close(p.stop)
	_ = p.ln.Close()
	p.cutAll()
	p.wg.Wait()
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			_ = cc.Close()
			continue
		}
		sc, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = cc.Close()
			continue
		}
		c := &faultConn{p: p, client: cc, server: sc}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.upstream(c)
		go p.downstream(c)
	}
}

// ruleFor returns the unfired rule matching args, sent on c, marking it
// fired, or nil. A holdBack rule marks c held before Hit tells the test,
// so that a cut the test makes next leaves c alone.
func (p *faultProxy) ruleFor(c *faultConn, args []string) *faultRule {
	if args == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rules {
		if !r.fired && r.match(args) {
			r.fired = true
			if r.kind == holdBack {
				c.holding = true
			}
			close(r.hit)
			return r
		}
	}
	return nil
}

// upstream forwards commands from the client to Redis, command by command.
func (p *faultProxy) upstream(c *faultConn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	var held *faultRule // holding back everything from here on
	var pending []byte  // bytes read and not forwarded yet
	buf := make([]byte, 64<<10)
	for {
		n, err := c.client.Read(buf)
		pending = append(pending, buf[:n]...)
		for held == nil && len(pending) > 0 {
			args, size, ok := parseCommand(pending)
			if !ok {
				break
			}
			r := p.ruleFor(c, args)
			if r != nil && r.kind == holdBack {
				held = r
				// Cut closes the connection at once, even while the
				// client keeps it open.
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					select {
					case <-r.cut:
						c.close()
					case <-r.release:
					case <-p.stop:
					}
				}()
				break
			}
			if r != nil {
				c.mu.Lock()
				c.awaiting = r
				c.mu.Unlock()
			}
			if subscribeCmd(args) {
				p.mu.Lock()
				c.pubsub = true
				p.mu.Unlock()
			}
			c.waitForwarding()
			if _, werr := c.server.Write(pending[:size]); werr != nil {
				c.close()
				return
			}
			pending = pending[size:]
		}
		if held != nil && err != nil {
			// The client has gone; what it sent may still be forwarded.
			break
		}
		if err != nil {
			c.close()
			return
		}
	}
	select {
	case <-held.release:
		c.mu.Lock()
		c.awaiting = held
		c.mu.Unlock()
		if _, err := c.server.Write(pending); err != nil {
			c.close()
			return
		}
		// Let Redis answer before the connection goes.
		select {
		case <-held.answered:
		case <-time.After(5 * time.Second):
		case <-p.stop:
		}
	case <-held.cut:
	case <-p.stop:
	}
	c.close()
}

// downstream forwards answers from Redis to the client, except those of
// commands whose reply is to be dropped.
func (p *faultProxy) downstream(c *faultConn) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.server.Read(buf)
		if n > 0 {
			c.mu.Lock()
			r := c.awaiting
			c.awaiting = nil
			c.mu.Unlock()
			if r != nil {
				r.ansOnce.Do(func() { close(r.answered) })
				if r.kind == dropReply {
					c.close()
					return
				}
			}
			c.waitForwarding()
			if _, werr := c.client.Write(buf[:n]); werr != nil {
				c.close()
				return
			}
		}
		if err != nil {
			c.close()
			return
		}
	}
}

// parseCommand parses the RESP array of bulk strings at the start of b. It
// reports ok false while the command is incomplete; bytes that are not such
// an array are returned whole, with nil args.
func parseCommand(b []byte) (args []string, size int, ok bool) {
	if len(b) == 0 {
		return nil, 0, false
	}
	if b[0] != '*' {
		return nil, len(b), true
	}
	line := func(at int) (string, int, bool) {
		i := bytes.Index(b[at:], []byte("\r\n"))
		if i < 0 {
			return "", 0, false
		}
		return string(b[at : at+i]), at + i + 2, true
	}
	head, at, ok := line(1)
	if !ok {
		return nil, 0, false
	}
	count, err := strconv.Atoi(head)
	if err != nil {
		return nil, len(b), true
	}
	args = make([]string, 0, count)
	for range count {
		if at >= len(b) {
			return nil, 0, false
		}
		if b[at] != '$' {
			return nil, len(b), true
		}
		l, next, ok := line(at + 1)
		if !ok {
			return nil, 0, false
		}
		size, err := strconv.Atoi(l)
		if err != nil {
			return nil, len(b), true
		}
		if next+size+2 > len(b) {
			return nil, 0, false
		}
		args = append(args, string(b[next:next+size]))
		at = next + size + 2
	}
	return args, at, true
}

// scriptOn matches a script call (EVAL, EVALSHA) whose keys include every
// one of keys.
func scriptOn(keys ...string) func(args []string) bool {
	return func(args []string) bool {
		if len(args) < 3 {
			return false
		}
		switch strings.ToUpper(args[0]) {
		case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO":
		default:
			return false
		}
		n, err := strconv.Atoi(args[2])
		if err != nil || 3+n > len(args) {
			return false
		}
		for _, k := range keys {
			found := false
			for _, a := range args[3 : 3+n] {
				if a == k {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
}

// subscribeCmd matches a SUBSCRIBE command.
func subscribeCmd(args []string) bool {
	return len(args) > 0 && strings.EqualFold(args[0], "SUBSCRIBE")
}

// lockKey is the Redis key that holds the lock on key, for a key that needs
// no escaping.
func lockKey(prefix, key string) string { return prefix + ":{" + key + "}" }

// fifoQueueKey is the Redis key of the FIFO queue of key.
func fifoQueueKey(prefix, key string) string { return lockKey(prefix, key) + ":q" }

// retryConfigs are go-redis's defaults (automatic retries on) and the
// defaults with retries off.
var retryConfigs = []redistest.ClientConfig{redistest.Defaults, redistest.NoRetries}

// newMutexOn returns a Mutex on c, closed at cleanup.
func newMutexOn(t testing.TB, c redis.UniversalClient, cfg mutex.Config) *mutex.Mutex {
	t.Helper()
	m, err := mutex.New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// receiveWithin waits up to d for the outcome of a Lock run by lockAsync.
func receiveWithin(ch <-chan grant, d time.Duration) (grant, bool) {
	select {
	case g := <-ch:
		return g, true
	case <-time.After(d):
		return grant{}, false
	}
}

// unlockIfHeld unlocks the lease of g, if it has one.
func unlockIfHeld(g grant) {
	if g.lease != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.lease.Unlock(ctx)
	}
}
