package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// RunnerClientName is the CLIENT SETNAME of the runner's own connections to
// Redis (nemesis, watchers): faults that kill client connections spare them.
const RunnerClientName = "chaos-runner"

// RedisConfig is how a scenario's redis-server runs. The zero value is the
// safe configuration: no persistence, no memory limit, maxmemory-policy
// noeviction.
type RedisConfig struct {
	// AOF turns on the append-only file with appendfsync always, so a
	// server killed and restarted in the same directory keeps every write
	// it acknowledged.
	AOF bool `json:"aof,omitempty"`
	// MaxMemory is the memory limit ("4mb"); empty means none.
	MaxMemory string `json:"maxmemory,omitempty"`
	// Policy is the maxmemory-policy; empty means noeviction.
	Policy string `json:"policy,omitempty"`
}

func (c RedisConfig) args() []string {
	args := []string{"--save", ""}
	if c.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if c.MaxMemory != "" {
		args = append(args, "--maxmemory", c.MaxMemory)
	}
	policy := c.Policy
	if policy == "" {
		policy = "noeviction"
	}
	return append(args, "--maxmemory-policy", policy)
}

// RedisServer is a redis-server process started on a free loopback port.
// Restart replaces the process; the address stays the same.
type RedisServer struct {
	Addr   string
	Config RedisConfig
	bin    string
	dir    string
	port   int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// RedisBinary returns $REDIS_SERVER or redis-server from PATH.
func RedisBinary() (string, error) {
	name := os.Getenv("REDIS_SERVER")
	if name == "" {
		name = "redis-server"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("redis-server not found (install it with: sudo apt-get install -y redis-server, or set REDIS_SERVER): %w", err)
	}
	return path, nil
}

// StartRedis starts redis-server in dir with cfg, trying a few free ports.
func StartRedis(dir string, cfg RedisConfig) (*RedisServer, error) {
	bin, err := RedisBinary()
	if err != nil {
		return nil, err
	}
	var last error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &RedisServer{Addr: "127.0.0.1:" + strconv.Itoa(port), Config: cfg, bin: bin, dir: dir, port: port}
		if last = s.start(); last == nil {
			return s, nil
		}
	}
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

// start runs redis-server on s.port and waits until it answers PING.
func (s *RedisServer) start() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis-"+strconv.Itoa(s.port)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir}, s.Config.args()...)
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		select {
		case <-done:
			return errors.New("redis-server exited at start (port taken?)")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = s.Stop()
	return errors.New("redis-server did not answer PING within 10s")
}

func (s *RedisServer) proc() (*os.Process, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process, s.done
}

// Process returns the running redis-server process.
func (s *RedisServer) Process() *os.Process {
	p, _ := s.proc()
	return p
}

// Pause stops the server with SIGSTOP.
func (s *RedisServer) Pause() error { return s.Process().Signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *RedisServer) Resume() error { return s.Process().Signal(syscall.SIGCONT) }

// Stop kills the server and waits for it to exit. It returns nil if the
// server has already exited.
func (s *RedisServer) Stop() error {
	p, done := s.proc()
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Kill()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("redis-server did not exit after SIGKILL")
	}
}

// Restart kills the server with SIGKILL, waits down, and starts it again
// on the same port, in the same directory, with the same configuration:
// without AOF it comes back empty, with AOF it reloads what it had
// acknowledged. It keeps trying for 10s if the port is briefly taken.
func (s *RedisServer) Restart(down time.Duration) error {
	if err := s.Stop(); err != nil {
		return err
	}
	time.Sleep(down)
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = s.start(); err == nil {
			return nil
		}
	}
	return fmt.Errorf("restart redis-server: %w", err)
}

// RunnerClient returns a client of the server named RunnerClientName,
// for the runner's own commands; the caller closes it.
func (s *RedisServer) RunnerClient() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr, ClientName: RunnerClientName})
}

// Info returns one field of INFO section, e.g. ("stats", "evicted_keys").
func Info(ctx context.Context, c *redis.Client, section, field string) (string, error) {
	s, err := c.Info(ctx, section).Result()
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(s) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO %s has no %s", section, field)
}
