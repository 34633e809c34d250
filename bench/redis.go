package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server process started for one run, without
// persistence, on a free loopback port.
type redisServer struct {
	addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// startRedis starts redis-server from PATH with an empty --save and
// --appendonly no, and waits until it answers PING.
func startRedis() (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found on PATH: install it with `apt-get install redis-server` (or pass -redis host:port of a running server): %w", err)
	}
	dir, err := os.MkdirTemp("", "benchpeers-redis-")
	if err != nil {
		return nil, err
	}
	var last error
	for range 5 {
		port, err := freePort()
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		s := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir}
		if last = s.start(bin, port); last == nil {
			return s, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, last
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *redisServer) start(bin string, port int) error {
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--loglevel", "warning", "--maxclients", "20000")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &limitedWriter{w: &out, n: 4096}, &limitedWriter{w: &out, n: 4096}
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-s.done:
			return fmt.Errorf("redis-server exited at start (port %d taken?): %s", port, strings.TrimSpace(out.String()))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
	}
	s.stop()
	return errors.New("redis-server did not answer PING within 10s")
}

// stop terminates the server (SIGTERM, then SIGKILL after 3s) and removes
// its directory. It is safe to call more than once.
func (s *redisServer) stop() {
	s.once.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(3 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
		}
		_ = os.RemoveAll(s.dir)
	})
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// info returns the fields of one INFO section.
func info(ctx context.Context, c *redis.Client, section string) (map[string]string, error) {
	s, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("INFO %s: %w", section, err)
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

// redisSample is what a measurement reads from Redis at its start and end.
type redisSample struct {
	cpu      time.Duration // used_cpu_user + used_cpu_sys
	commands int64         // calls since CONFIG RESETSTAT, but INFO, CONFIG and PING
}

// sample reads the server's CPU time and command count.
func sample(ctx context.Context, c *redis.Client) (redisSample, error) {
	var s redisSample
	cpu, err := info(ctx, c, "cpu")
	if err != nil {
		return s, err
	}
	for _, k := range []string{"used_cpu_user", "used_cpu_sys"} {
		f, err := strconv.ParseFloat(cpu[k], 64)
		if err != nil {
			return s, fmt.Errorf("INFO cpu: field %s=%q: %w", k, cpu[k], err)
		}
		s.cpu += time.Duration(f * float64(time.Second))
	}
	stats, err := info(ctx, c, "commandstats")
	if err != nil {
		return s, err
	}
	s.commands, err = countCommands(stats)
	return s, err
}

// countCommands adds up the calls of INFO commandstats fields such as
// "cmdstat_evalsha" -> "calls=3,usec=...", leaving out the commands the
// runner itself sends (info, config, ping). Commands called from scripts are
// counted under their own names by Redis, so they are included.
func countCommands(stats map[string]string) (int64, error) {
	var n int64
	for k, v := range stats {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		base, _, _ := strings.Cut(name, "|")
		if base == "info" || base == "config" || base == "ping" {
			continue
		}
		calls, _, _ := strings.Cut(v, ",")
		num, ok := strings.CutPrefix(calls, "calls=")
		if !ok {
			return 0, fmt.Errorf("INFO commandstats: unexpected field %s:%s", k, v)
		}
		c, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("INFO commandstats: field %s: %w", k, err)
		}
		n += c
	}
	return n, nil
}
