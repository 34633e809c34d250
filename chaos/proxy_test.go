package chaos_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distlock/distlock/chaos"
	"github.com/redis/go-redis/v9"
)

// startRedis starts a redis-server for one test, and fails the test if
// there is no redis-server to start.
func startRedis(t *testing.T, cfg chaos.RedisConfig) *chaos.RedisServer {
	t.Helper()
	srv, err := chaos.StartRedis(t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Error(err)
		}
	})
	return srv
}

func startProxy(t *testing.T, target string) *chaos.Proxy {
	t.Helper()
	p, err := chaos.StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// rawConn is a connection that speaks RESP by hand, so a test controls
// exactly what is sent when.
type rawConn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *rawConn) send(args ...string) {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one simple reply (status, error, integer or bulk string)
// within d.
func (c *rawConn) reply(d time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line[0] != '$' {
		return line, nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return line, err
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return "", err
	}
	return string(b[:n]), nil
}

func (c *rawConn) mustReply(want string) {
	c.t.Helper()
	got, err := c.reply(5 * time.Second)
	if err != nil || got != want {
		c.t.Fatalf("reply %q, %v; want %q", got, err, want)
	}
}

// TestProxyLatencyKeepsOrder sends requests in separate writes while the
// proxy delays every chunk at random, and checks that the replies come
// back in order, and late.
func TestProxyLatencyKeepsOrder(t *testing.T) {
	srv := startRedis(t, chaos.RedisConfig{})
	p := startProxy(t, srv.Addr)
	c := dialRaw(t, p.Addr)
	c.send("PING")
	c.mustReply("+PONG")

	p.SetLatency(20 * time.Millisecond)
	const n = 60
	go func() {
		for i := range n {
			c.send("ECHO", strconv.Itoa(i))
			time.Sleep(time.Millisecond)
		}
	}()
	for i := range n {
		c.mustReply(strconv.Itoa(i))
	}
	pings := func() time.Duration {
		start := time.Now()
		for range 10 {
			c.send("PING")
			c.mustReply("+PONG")
		}
		return time.Since(start)
	}
	// 20 delays of 0-20ms: 200ms on average.
	slow := pings()
	p.SetLatency(0)
	if fast := pings(); slow < 50*time.Millisecond || fast > slow/2 {
		t.Errorf("10 round trips took %v with latency, %v without", slow, fast)
	}
}

// TestProxyResetClosesConns checks that Reset closes both ends of every
// connection, and that the proxy accepts new ones afterwards.
func TestProxyResetClosesConns(t *testing.T) {
	srv := startRedis(t, chaos.RedisConfig{})
	p := startProxy(t, srv.Addr)
	admin := srv.RunnerClient()
	defer admin.Close()
	rc := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	defer rc.Close()
	if err := rc.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, p.Addr)
	c.send("PING")
	c.mustReply("+PONG")
	if got := p.Conns(); got != 2 {
		t.Fatalf("%d proxied connections, want 2", got)
	}
	if got := p.Reset(); got != 2 {
		t.Fatalf("Reset closed %d connections, want 2", got)
	}
	if _, err := c.reply(2 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("read after reset: %v, want EOF", err)
	}
	// Redis sees the server ends closed: only the runner's connection is left.
	deadline := time.Now().Add(2 * time.Second)
	for {
		list, err := admin.ClientList(t.Context()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(list, "\n") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections left in Redis after reset:\n%s", list)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// go-redis finds its pooled connection closed and dials again.
	if err := rc.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if got := p.Conns(); got != 1 {
		t.Fatalf("%d proxied connections after a new dial, want 1", got)
	}
}

// TestProxyDropSwallowsReply checks that an armed connection forwards the
// next request, swallows its reply and closes a hold later, and that
// go-redis, with its default retries, sends such a request again.
func TestProxyDropSwallowsReply(t *testing.T) {
	srv := startRedis(t, chaos.RedisConfig{})
	p := startProxy(t, srv.Addr)
	admin := srv.RunnerClient()
	defer admin.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const hold = 300 * time.Millisecond

	idle := dialRaw(t, p.Addr) // sends nothing, so it is not armed
	c := dialRaw(t, p.Addr)
	c.send("PING")
	c.mustReply("+PONG")
	if got := p.DropReplies(rng, hold); got != 1 {
		t.Fatalf("DropReplies armed %d connections, want 1", got)
	}
	start := time.Now()
	c.send("INCR", "k")
	if got, err := c.reply(hold / 2); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("reply to the dropped request: %q, %v", got, err)
	}
	if got, err := admin.Get(t.Context(), "k").Result(); err != nil || got != "1" {
		t.Fatalf("GET k = %q, %v: the dropped request did not reach Redis", got, err)
	}
	if _, err := c.reply(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the hold: %v, want EOF", err)
	}
	if d := time.Since(start); d < hold {
		t.Fatalf("connection closed after %v, before the hold of %v", d, hold)
	}
	if got := p.Dropped(); got != 1 {
		t.Fatalf("Dropped() = %d, want 1", got)
	}
	idle.send("PING")
	idle.mustReply("+PONG")
	_ = idle.Close()
	for deadline := time.Now().Add(2 * time.Second); p.Conns() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d proxied connections left", p.Conns())
		}
	}

	rc := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer rc.Close()
	if err := rc.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if got := p.DropReplies(rng, hold); got != 1 {
		t.Fatalf("DropReplies armed %d connections, want 1", got)
	}
	got, err := rc.Incr(t.Context(), "k").Result()
	if err != nil || got != 3 {
		t.Fatalf("INCR through a dropped reply = %d, %v; want 3 (sent twice)", got, err)
	}
	if got := p.Dropped(); got != 2 {
		t.Fatalf("Dropped() = %d, want 2", got)
	}
}
