package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	installHint = "install it with: sudo apt-get install -y redis-server, or set REDIS_SERVER"

	defaultStartTimeout = 10 * time.Second
	// stopGrace is how long a server may take to exit after SIGTERM before
	// it is killed. It exceeds Redis' own shutdown-timeout (10s), which
	// bounds how long a primary waits for lagging replicas.
	stopGrace = 15 * time.Second
	// killWait bounds the wait for a process to exit after SIGKILL.
	killWait = 10 * time.Second
	// startAttempts is how many ports are tried when a server with an
	// automatically chosen port fails to come up (the port may have been
	// taken between choosing it and the server binding it).
	startAttempts = 5
	// restartAttempts is how many times a restart on a fixed port is tried.
	restartAttempts = 3
	logTailBytes    = 4096
)

// ErrNotFound is matched (with errors.Is) by the error Binary returns when
// no redis-server binary can be found.
var ErrNotFound = errors.New("redistest: redis-server not found in PATH (" + installHint + ")")

type notFoundError struct{ msg string }

func (e *notFoundError) Error() string        { return e.msg }
func (e *notFoundError) Is(target error) bool { return target == ErrNotFound }

// Binary returns the path of redis-server: $REDIS_SERVER if set (a path, or
// a name looked up in PATH), else redis-server looked up in PATH. If none is
// found, the error names the command that installs it and matches
// ErrNotFound.
func Binary() (string, error) {
	if env := os.Getenv("REDIS_SERVER"); env != "" {
		path, err := exec.LookPath(env)
		if err != nil {
			return "", &notFoundError{msg: fmt.Sprintf(
				"redistest: redis-server not found at REDIS_SERVER=%q: %v (%s)", env, err, installHint)}
		}
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		return path, nil
	}
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return "", ErrNotFound
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return path, nil
}

// Option configures a Server started by Start.
type Option func(*options)

type options struct {
	conf         string // config file, passed as the first argument
	args         []string
	port         int
	startTimeout time.Duration
}

// WithArgs appends extra redis-server command-line arguments, for example
// WithArgs("--maxmemory-policy", "noeviction"). They come after the
// defaults, so they override them (use WithPort, not --port, to choose the
// port).
func WithArgs(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// WithPort starts the server on a fixed port instead of a free one chosen
// automatically.
func WithPort(port int) Option {
	return func(o *options) { o.port = port }
}

// WithStartTimeout bounds how long Start and Restart wait for the server to
// answer PING (10s by default).
func WithStartTimeout(d time.Duration) Option {
	return func(o *options) { o.startTimeout = d }
}

// Server is a redis-server process run for tests.
type Server struct {
	bin          string
	conf         string
	args         []string
	dir          string
	logPath      string
	startTimeout time.Duration
	fixedPort    bool
	port         int // set before the Server is handed out, then constant

	mu     sync.Mutex
	proc   *process // nil while stopped
	paused bool
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been waited for
	err  error         // result of cmd.Wait, valid once done is closed
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start starts a redis-server on a free 127.0.0.1 port, without
// persistence, in its own temporary directory, and waits until it answers
// PING. The server is stopped when the test and its subtests complete.
// If redis-server cannot be found or does not come up, Start calls t.Fatal.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err.Error())
	}
	s, err := newServer(bin, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err.Error())
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("redistest: stopping %s: %v", s.Addr(), err)
		}
	})
	return s
}

// newServer starts a server whose files live in dir.
func newServer(bin, dir string, opts []Option) (*Server, error) {
	o := options{startTimeout: defaultStartTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	// Redis reports its directory with symlinks resolved; do the same so
	// that Dir matches what the server sees.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	s := &Server{
		bin:          bin,
		conf:         o.conf,
		args:         o.args,
		dir:          dir,
		logPath:      filepath.Join(dir, "redis.log"),
		startTimeout: o.startTimeout,
		fixedPort:    o.port != 0,
		port:         o.port,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(!s.fixedPort); err != nil {
		return nil, err
	}
	return s, nil
}

// Addr returns the server address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// URL returns a redis:// URL for database 0 of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Dir returns the server's working directory (--dir), which also holds
// its log file.
func (s *Server) Dir() string { return s.dir }

// Log returns what the server has written to its log so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", s.logPath, err)
	}
	return string(b)
}

// Client returns a new go-redis client for the server, closed when the test
// completes. Apart from Addr it uses go-redis defaults, changed by mods in
// order.
func (s *Server) Client(t testing.TB, mods ...func(*redis.Options)) *redis.Client {
	t.Helper()
	opt := &redis.Options{Addr: s.Addr()}
	for _, mod := range mods {
		mod(opt)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop stops the server (SIGTERM, then SIGKILL if it has not exited after a
// grace period) and waits for it to exit. Stopping a stopped server does
// nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Errorf("redistest: stopping %s: %v", s.Addr(), err)
	}
}

func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc, s.paused = nil, false
	return terminate(p)
}

// Kill kills the server with SIGKILL and waits for it to exit. Killing a
// stopped server does nothing.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return
	}
	s.proc, s.paused = nil, false
	if err := kill(p); err != nil {
		t.Errorf("redistest: killing %s: %v", s.Addr(), err)
	}
}

// Pause suspends the server with SIGSTOP: connections stay open but nothing
// is answered until Resume. The server is resumed when the test completes.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	if err := s.signal(syscall.SIGSTOP, true); err != nil {
		t.Fatalf("redistest: pausing %s: %v", s.Addr(), err)
	}
	t.Cleanup(func() { _ = s.signal(syscall.SIGCONT, false) })
}

// Resume resumes a server suspended by Pause (SIGCONT).
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	if err := s.signal(syscall.SIGCONT, false); err != nil {
		t.Fatalf("redistest: resuming %s: %v", s.Addr(), err)
	}
}

func (s *Server) signal(sig syscall.Signal, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return errors.New("server is not running")
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		return err
	}
	s.paused = paused
	return nil
}

// Restart stops the server and starts it again on the same port with the
// same arguments, waiting until it answers PING. Without persistence, all
// data is lost. A stopped or killed server is just started.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		t.Fatalf("redistest: restarting %s: %v", s.Addr(), err)
	}
	if err := s.startLocked(false); err != nil {
		t.Fatal(err.Error())
	}
}

// running reports whether the server process is up.
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}

// startLocked starts the server process, on a newly chosen port if newPort
// is set, else on s.port.
func (s *Server) startLocked(newPort bool) error {
	attempts := restartAttempts
	if newPort {
		attempts = startAttempts
	}
	var errs []error
	for i := 0; i < attempts; i++ {
		if newPort {
			port, err := freePort()
			if err != nil {
				return fmt.Errorf("redistest: choosing a port: %w", err)
			}
			s.port = port
		} else if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		p, err := s.launch()
		if err != nil {
			return fmt.Errorf("redistest: starting %s: %w", s.bin, err)
		}
		err = s.waitReady(p)
		if err == nil {
			s.proc, s.paused = p, false
			return nil
		}
		_ = kill(p)
		errs = append(errs, fmt.Errorf("port %d: %w", s.port, err))
		var re retryableError
		if !errors.As(err, &re) {
			break
		}
	}
	return fmt.Errorf("redistest: redis-server did not start: %w\n--- tail of %s ---\n%s",
		errors.Join(errs...), s.logPath, s.logTail())
}

func (s *Server) launch() (*process, error) {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	args := append([]string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
	}, s.args...)
	if s.conf != "" {
		args = append([]string{s.conf}, args...)
	}
	fmt.Fprintf(logf, "=== redistest: %s %s\n", s.bin, quoteArgs(args))
	cmd := exec.Command(s.bin, args...)
	// A file (not a pipe) as output means no copying goroutine, and no
	// dependency on descendants closing a pipe for Wait to return.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// retryableError marks start failures that another attempt may fix.
type retryableError struct{ error }

func (e retryableError) Unwrap() error { return e.error }

func (s *Server) waitReady(p *process) error {
	addr := s.Addr()
	deadline := time.Now().Add(s.startTimeout)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastErr error
	for {
		select {
		case <-p.done:
			// Most likely the port is in use.
			return retryableError{fmt.Errorf("redis-server exited: %v", p.err)}
		case <-timer.C:
		}
		pid, err := probe(addr, deadline)
		if err == nil {
			if pid == p.cmd.Process.Pid {
				return nil
			}
			return retryableError{fmt.Errorf("port is served by another process (pid %d)", pid)}
		}
		lastErr = err
		if !time.Now().Before(deadline) {
			return fmt.Errorf("no answer to PING within %v: %v", s.startTimeout, lastErr)
		}
		timer.Reset(10 * time.Millisecond)
	}
}

// probe sends PING and INFO server to addr and returns the process id of
// the server that answers.
func probe(addr string, deadline time.Time) (int, error) {
	d := net.Dialer{Deadline: deadline, Timeout: time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ioDeadline := time.Now().Add(2 * time.Second)
	if deadline.Before(ioDeadline) {
		ioDeadline = deadline
	}
	if err := conn.SetDeadline(ioDeadline); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line = strings.TrimRight(line, "\r\n"); line != "+PONG" {
		return 0, fmt.Errorf("PING replied %q", line)
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return 0, fmt.Errorf("INFO replied %q", line)
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 || n > 1<<20 {
		return 0, fmt.Errorf("INFO replied %q", line)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server has no process_id")
}

// freePort returns a port that is free on 127.0.0.1, as is the port 10000
// above it (the Redis Cluster bus port). Ports are taken from [10000, 20000),
// below the usual ephemeral range, so that outgoing connections cannot take
// the port of a server while it restarts.
func freePort() (int, error) {
	for i := 0; i < 50; i++ {
		port := 10000 + rand.IntN(10000)
		if portFree(port) && portFree(port+10000) {
			return port, nil
		}
	}
	// Fall back to a port chosen by the kernel.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	return ln.Close() == nil
}

func (s *Server) logTail() string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTailBytes {
		if _, err := f.Seek(-logTailBytes, io.SeekEnd); err != nil {
			return fmt.Sprintf("(cannot read log: %v)", err)
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	return string(b)
}

// terminate stops p with SIGTERM, escalating to SIGKILL after stopGrace.
func terminate(p *process) error {
	// A paused process only acts on SIGTERM once continued.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	if err := kill(p); err != nil {
		return err
	}
	return fmt.Errorf("redis-server did not exit within %v of SIGTERM and was killed", stopGrace)
}

// kill kills p with SIGKILL and waits for it to exit.
func kill(p *process) error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	timer := time.NewTimer(killWait)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		return fmt.Errorf("redis-server (pid %d) did not exit within %v of SIGKILL", p.cmd.Process.Pid, killWait)
	}
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
