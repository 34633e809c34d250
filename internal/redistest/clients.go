package redistest

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// ClientConfig is a go-redis setting that fault tests run with.
type ClientConfig struct {
	Name string
	Mod  func(*redis.Options)
	// UniversalMod is the same setting for Backend.Client.
	UniversalMod func(*redis.UniversalOptions)
}

// Defaults and NoRetries are go-redis's default options (automatic retries
// of a command whose reply was lost included) and the same with retries
// off; ContextTimeouts makes go-redis bound each call by its context.
var (
	Defaults = ClientConfig{
		Name:         "default options",
		Mod:          func(*redis.Options) {},
		UniversalMod: func(*redis.UniversalOptions) {},
	}
	NoRetries = ClientConfig{
		Name:         "no retries",
		Mod:          func(o *redis.Options) { o.MaxRetries = -1 },
		UniversalMod: func(o *redis.UniversalOptions) { o.MaxRetries = -1 },
	}
	ContextTimeouts = ClientConfig{
		Name:         "context timeouts",
		Mod:          func(o *redis.Options) { o.ContextTimeoutEnabled = true },
		UniversalMod: func(o *redis.UniversalOptions) { o.ContextTimeoutEnabled = true },
	}
)

// FaultConfigs are the client settings every fault test runs with.
var FaultConfigs = []ClientConfig{Defaults, NoRetries, ContextTimeouts}

// ProxiedClient returns a client of srv whose connections go through a new
// Proxy, and the Proxy. The client uses go-redis defaults changed by mods,
// and is connected before ProxiedClient returns, so that a Pause of the
// proxy stalls a call in flight rather than a dial. Both are closed when
// the test completes.
func ProxiedClient(t testing.TB, srv *Server, mods ...func(*redis.Options)) (*redis.Client, *Proxy) {
	t.Helper()
	p := NewProxy(t, srv.Addr())
	c := srv.Client(t, append(mods, func(o *redis.Options) { o.Addr = p.Addr() })...)
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redistest: ping through the proxy: %v", err)
	}
	return c, p
}

// Detour sends a client's connections through a Proxy until Bypass is
// called, and straight to the server from then on; it tells when the
// client starts its first command after Bypass. Pausing the proxy and then
// calling Bypass stalls the connections the client has, while new ones
// work: a stalled call in flight beside calls that go through.
type Detour struct {
	proxy, direct string
	bypass        atomic.Bool
	started       chan struct{}
	once          sync.Once
}

// NewDetour returns a Detour through p to the server at direct.
func NewDetour(p *Proxy, direct string) *Detour {
	return &Detour{proxy: p.Addr(), direct: direct, started: make(chan struct{})}
}

// Client returns a client of the server whose connections take the
// detour, with go-redis defaults changed by mods. It is closed when the
// test completes.
func (d *Detour) Client(t testing.TB, srv *Server, mods ...func(*redis.Options)) *redis.Client {
	t.Helper()
	c := srv.Client(t, append(mods, func(o *redis.Options) {
		o.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
			addr := d.proxy
			if d.bypass.Load() {
				addr = d.direct
			}
			var nd net.Dialer
			return nd.DialContext(ctx, network, addr)
		}
	})...)
	c.AddHook(d)
	return c
}

// Bypass sends new connections straight to the server.
func (d *Detour) Bypass() { d.bypass.Store(true) }

// Started is closed when the client starts a command after Bypass.
func (d *Detour) Started() <-chan struct{} { return d.started }

func (d *Detour) seen() {
	if d.bypass.Load() {
		d.once.Do(func() { close(d.started) })
	}
}

// DialHook implements redis.Hook.
func (d *Detour) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (d *Detour) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		d.seen()
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (d *Detour) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		d.seen()
		return next(ctx, cmds)
	}
}
