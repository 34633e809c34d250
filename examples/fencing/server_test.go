package fencing_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// TestMain stops the redis-server the tests started, then checks that no
// goroutine was left running.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := stopServer(); err != nil {
		fmt.Fprintln(os.Stderr, "stop redis-server:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// server is one redis-server process shared by the tests of the package,
// started on first use.
var server struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	dir    string
	addr   string
	err    error
}

// redisClient returns a client of the shared redis-server, closed when the
// test ends. It fails the test if redis-server cannot be started.
func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	addr, err := serverAddr()
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func serverAddr() (string, error) {
	server.mu.Lock()
	defer server.mu.Unlock()
	if server.addr != "" || server.err != nil {
		return server.addr, server.err
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		server.err = errors.New("redis-server not found: install it with sudo apt-get install -y redis-server")
		return "", server.err
	}
	server.dir, err = os.MkdirTemp("", "fencing-redis-")
	if err != nil {
		server.err = err
		return "", err
	}
	// A free port may be taken between finding and binding it: try again.
	for range 5 {
		if err = startServer(bin); err == nil {
			return server.addr, nil
		}
	}
	server.err = err
	return "", err
}

func startServer(bin string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	logFile, err := os.Create(filepath.Join(server.dir, "redis.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", server.dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(5 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err = c.Ping(ctx).Err()
		cancel()
		if err == nil {
			server.cmd, server.exited, server.addr = cmd, exited, addr
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-exited:
			deadline = time.Time{}
		case <-time.After(20 * time.Millisecond):
		}
	}
	_ = cmd.Process.Kill()
	<-exited
	log, _ := os.ReadFile(logFile.Name())
	return fmt.Errorf("redis-server on port %d not ready: %v\n%s", port, err, log)
}

func stopServer() error {
	server.mu.Lock()
	defer server.mu.Unlock()
	var err error
	if server.cmd != nil {
		_ = server.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-server.exited:
		case <-time.After(5 * time.Second):
			err = errors.New("no exit within 5s of SIGTERM; killed")
			_ = server.cmd.Process.Kill()
			<-server.exited
		}
		server.cmd = nil
	}
	if server.dir != "" {
		err = errors.Join(err, os.RemoveAll(server.dir))
		server.dir = ""
	}
	return err
}
