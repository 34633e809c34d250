package redistest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestStartPing(t *testing.T) {
	s := redistest.Start(t)
	if want := "127.0.0.1:" + strconv.Itoa(s.Port()); s.Addr() != want {
		t.Fatalf("Addr() = %q, want %q", s.Addr(), want)
	}
	if want := "redis://" + s.Addr() + "/0"; s.URL() != want {
		t.Fatalf("URL() = %q, want %q", s.URL(), want)
	}
	opt, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	if opt.Addr != s.Addr() || opt.DB != 0 {
		t.Fatalf("ParseURL(URL()) = %s db %d", opt.Addr, opt.DB)
	}

	ctx := context.Background()
	c := s.Client(t)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	cfg, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"save":           "",
		"appendonly":     "no",
		"bind":           "127.0.0.1",
		"protected-mode": "no",
		"dir":            s.Dir(),
		"port":           strconv.Itoa(s.Port()),
	} {
		if cfg[k] != want {
			t.Errorf("CONFIG GET %s = %q, want %q", k, cfg[k], want)
		}
	}
	if !strings.Contains(s.Log(), "Ready to accept connections") {
		t.Errorf("log does not say the server is ready:\n%s", s.Log())
	}
}

func TestWithArgs(t *testing.T) {
	s := redistest.Start(t, redistest.WithArgs("--maxmemory-policy", "noeviction", "--maxmemory", "64mb"))
	c := s.Client(t)
	cfg, err := c.ConfigGet(context.Background(), "maxmemory*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if cfg["maxmemory-policy"] != "noeviction" || cfg["maxmemory"] != strconv.Itoa(64<<20) {
		t.Fatalf("CONFIG GET maxmemory* = %v", cfg)
	}
}

func TestClientOptions(t *testing.T) {
	s := redistest.Shared(t)
	c := s.Client(t, func(o *redis.Options) { o.DB = 3 }, func(o *redis.Options) { o.ClientName = "redistest" })
	if got := c.Options(); got.Addr != s.Addr() || got.DB != 3 {
		t.Fatalf("options: addr %q db %d", got.Addr, got.DB)
	}
	ctx := context.Background()
	name, err := c.ClientGetName(ctx).Result()
	if err != nil || name != "redistest" {
		t.Fatalf("CLIENT GETNAME = %q, %v", name, err)
	}
	if err := c.Set(ctx, "TestClientOptions", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n := s.Client(t).Exists(ctx, "TestClientOptions").Val(); n != 0 {
		t.Fatalf("key written to DB 3 is visible in DB 0")
	}
}

func TestSharedIsReused(t *testing.T) {
	a, b := redistest.Shared(t), redistest.Shared(t)
	if a != b {
		t.Fatalf("Shared returned different servers: %s and %s", a.Addr(), b.Addr())
	}
	if err := a.Client(t).Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestParallelStarts(t *testing.T) {
	var mu sync.Mutex
	ports := map[int]bool{}
	for i := range 4 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			s := redistest.Start(t)
			if err := s.Client(t).Ping(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if ports[s.Port()] {
				t.Errorf("port %d used twice", s.Port())
			}
			ports[s.Port()] = true
		})
	}
}

func TestRestartKeepsPortLosesData(t *testing.T) {
	s := redistest.Start(t)
	ctx := context.Background()
	if err := s.Client(t).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	port := s.Port()
	s.Restart(t)
	if s.Port() != port {
		t.Fatalf("port changed from %d to %d", port, s.Port())
	}
	err := s.Client(t).Get(ctx, "k").Err()
	if !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after restart: %v, want redis.Nil", err)
	}
}

func TestStopAndKill(t *testing.T) {
	ctx := context.Background()
	noRetry := func(o *redis.Options) { o.MaxRetries = -1; o.DialTimeout = 200 * time.Millisecond }

	s := redistest.Start(t)
	s.Stop(t)
	s.Stop(t) // idempotent
	if err := s.Client(t, noRetry).Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Stop")
	}

	s = redistest.Start(t)
	s.Kill(t)
	if err := s.Client(t, noRetry).Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Kill")
	}
	s.Restart(t)
	if err := s.Client(t).Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after restarting a killed server: %v", err)
	}
}

func TestPauseResume(t *testing.T) {
	s := redistest.Start(t)
	ctx := context.Background()
	c := s.Client(t, func(o *redis.Options) {
		o.ReadTimeout = 200 * time.Millisecond
		o.WriteTimeout = 200 * time.Millisecond
		o.MaxRetries = -1
	})
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	s.Pause(t)
	start := time.Now()
	err := c.Ping(ctx).Err()
	if err == nil {
		t.Fatal("PING succeeded while paused")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("PING while paused: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("PING while paused took %v", d)
	}
	s.Resume(t)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
}

// TestPausedAtCleanup checks that a server left paused is still stopped.
func TestPausedAtCleanup(t *testing.T) {
	var s *redistest.Server
	t.Run("pause", func(t *testing.T) {
		s = redistest.Start(t)
		s.Pause(t)
	})
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("server still answers after its test ended")
	}
}

// rawConn talks RESP over a plain TCP connection.
type rawConn struct {
	t testing.TB
	net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) readLine(timeout time.Duration) (string, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

func TestProxy(t *testing.T) {
	s := redistest.Shared(t)
	p := redistest.NewProxy(t, s.Addr())
	if p.Target() != s.Addr() {
		t.Fatalf("Target() = %q", p.Target())
	}
	ctx := context.Background()

	t.Run("pass-through", func(t *testing.T) {
		c := redis.NewClient(&redis.Options{Addr: p.Addr()})
		defer c.Close()
		if err := c.Set(ctx, "TestProxy", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Client(t).Get(ctx, "TestProxy").Result(); err != nil || v != "v" {
			t.Fatalf("GET directly = %q, %v", v, err)
		}
		big := strings.Repeat("x", 1<<20)
		if err := c.Set(ctx, "TestProxy:big", big, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, "TestProxy:big").Result(); err != nil || v != big {
			t.Fatalf("GET of 1MiB through the proxy: len %d, %v", len(v), err)
		}
	})

	t.Run("pause", func(t *testing.T) {
		c := dialRaw(t, p.Addr())
		c.send("PING\r\n")
		if line, err := c.readLine(time.Second); err != nil || line != "+PONG" {
			t.Fatalf("PING = %q, %v", line, err)
		}
		p.Pause()
		p.Pause() // no effect
		c.send("PING\r\n")
		_, err := c.readLine(200 * time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read while paused: %v, want a timeout", err)
		}
		// A connection made while paused is accepted but not served.
		c2 := dialRaw(t, p.Addr())
		c2.send("PING\r\n")
		if _, err := c2.readLine(100 * time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read on new connection while paused: %v, want a timeout", err)
		}
		p.Resume()
		p.Resume() // no effect
		for _, c := range []*rawConn{c, c2} {
			if line, err := c.readLine(time.Second); err != nil || line != "+PONG" {
				t.Fatalf("PING held back by Pause = %q, %v", line, err)
			}
		}
	})

	t.Run("cut", func(t *testing.T) {
		c := dialRaw(t, p.Addr())
		c.send("PING\r\n")
		if line, err := c.readLine(time.Second); err != nil || line != "+PONG" {
			t.Fatalf("PING = %q, %v", line, err)
		}
		rc := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, PoolSize: 1})
		defer rc.Close()
		id, err := rc.ClientID(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		p.CutAll()
		if line, err := c.readLine(time.Second); err == nil {
			t.Fatalf("read after CutAll returned %q", line)
		}
		// The pooled connection is gone; the client reconnects.
		id2, err := rc.ClientID(ctx).Result()
		if err != nil {
			id2, err = rc.ClientID(ctx).Result()
		}
		if err != nil {
			t.Fatalf("CLIENT ID after CutAll: %v", err)
		}
		if id2 == id {
			t.Fatalf("client still uses connection %d after CutAll", id)
		}
	})

	t.Run("close", func(t *testing.T) {
		c := dialRaw(t, p.Addr())
		p.Pause() // Close must not wait for a resume
		c.send("PING\r\n")
		p.Close()
		p.Close()
		if line, err := c.readLine(time.Second); err == nil {
			t.Fatalf("read after Close returned %q", line)
		}
		if conn, err := net.DialTimeout("tcp", p.Addr(), 200*time.Millisecond); err == nil {
			conn.Close()
			t.Fatal("proxy still accepts connections after Close")
		}
	})
}

func TestProxyTargetDown(t *testing.T) {
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())
	s.Stop(t)
	c := dialRaw(t, p.Addr())
	c.send("PING\r\n")
	if line, err := c.readLine(2 * time.Second); err == nil {
		t.Fatalf("read through a proxy to a stopped server returned %q", line)
	}
}

func TestCommandStats(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := redistest.ResetStats(ctx, c); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := c.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := c.Get(ctx, "k0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Eval(ctx, "return redis.call('SET', KEYS[1], ARGV[1])", []string{"k3"}, "v").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "ch", "msg").Err(); err != nil {
		t.Fatal(err)
	}
	stats, err := redistest.CommandStats(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	for cmd, want := range map[string]int64{"set": 4, "get": 2, "eval": 1, "publish": 1} {
		if stats[cmd] != want {
			t.Errorf("calls of %s = %d, want %d (all: %v)", cmd, stats[cmd], want, stats)
		}
	}
	// CONFIG RESETSTAT counts itself, after resetting.
	if stats["config|resetstat"] > 1 || stats["info"] != 0 {
		t.Errorf("stats count commands from before the reset: %v", stats)
	}

	if err := redistest.ResetStats(ctx, c); err != nil {
		t.Fatal(err)
	}
	stats, err = redistest.CommandStats(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if stats["set"] != 0 || stats["get"] != 0 {
		t.Errorf("stats after ResetStats: %v", stats)
	}
}

// fatalTB records the first Fatal call and ends the calling goroutine,
// as testing.T does. Everything else goes to the real test.
type fatalTB struct {
	testing.TB
	msg     string
	skipped bool
}

func (f *fatalTB) Fatal(args ...any) {
	f.msg = strings.TrimSuffix(fmt.Sprintln(args...), "\n")
	runtime.Goexit()
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.Fatal(fmt.Sprintf(format, args...))
}

func (f *fatalTB) Skip(args ...any)                 { f.skipped = true; runtime.Goexit() }
func (f *fatalTB) Skipf(format string, args ...any) { f.skipped = true; runtime.Goexit() }
func (f *fatalTB) SkipNow()                         { f.skipped = true; runtime.Goexit() }

// startFailure runs Start and returns the message it failed with.
func startFailure(t *testing.T, opts ...redistest.Option) string {
	t.Helper()
	f := &fatalTB{TB: t}
	done := make(chan *redistest.Server)
	go func() {
		var s *redistest.Server
		defer func() { done <- s }()
		s = redistest.Start(f, opts...)
	}()
	if s := <-done; s != nil {
		t.Fatalf("Start succeeded with %s", s.Addr())
	}
	if f.skipped {
		t.Fatal("Start skipped the test instead of failing it")
	}
	return f.msg
}

const install = "sudo apt-get install -y redis-server"

func TestBinaryMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-redis-server")
	t.Setenv("REDIS_SERVER", missing)
	_, err := redistest.Binary()
	if err == nil {
		t.Fatal("Binary succeeded with REDIS_SERVER pointing at a missing file")
	}
	if !strings.Contains(err.Error(), install) || !strings.Contains(err.Error(), missing) {
		t.Errorf("error does not name the install command and the file: %v", err)
	}
	if !errors.Is(err, redistest.ErrNotFound) {
		t.Errorf("error does not match ErrNotFound: %v", err)
	}
	if msg := startFailure(t); msg != err.Error() {
		t.Errorf("Start failed with %q, want %q", msg, err.Error())
	}
}

func TestBinaryNotInPath(t *testing.T) {
	t.Setenv("REDIS_SERVER", "")
	t.Setenv("PATH", t.TempDir())
	_, err := redistest.Binary()
	const want = "redistest: redis-server not found in PATH (install it with: sudo apt-get install -y redis-server, or set REDIS_SERVER)"
	if err == nil || err.Error() != want {
		t.Fatalf("Binary() error = %v, want %q", err, want)
	}
	if msg := startFailure(t); msg != want {
		t.Errorf("Start failed with %q, want %q", msg, want)
	}
}

func TestBinaryFromEnv(t *testing.T) {
	real, err := redistest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("REDIS_SERVER", real)
	if got, err := redistest.Binary(); err != nil || got != real {
		t.Fatalf("Binary() = %q, %v, want %q", got, err, real)
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	script := filepath.Join(t.TempDir(), "broken-redis-server")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'broken server: cannot start' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REDIS_SERVER", script)
	msg := startFailure(t)
	if !strings.Contains(msg, "did not start") || !strings.Contains(msg, "broken server: cannot start") {
		t.Fatalf("failure message lacks the server output:\n%s", msg)
	}
}

func TestStartTimeout(t *testing.T) {
	script := filepath.Join(t.TempDir(), "silent-redis-server")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REDIS_SERVER", script)
	start := time.Now()
	msg := startFailure(t, redistest.WithStartTimeout(300*time.Millisecond))
	if !strings.Contains(msg, "no answer to PING") {
		t.Fatalf("failure message: %s", msg)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Start gave up after %v", d)
	}
}
