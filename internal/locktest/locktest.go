package locktest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// childEnv names the environment variable that tells a test binary that
// it runs as a child, and which test it runs for.
const childEnv = "DISTLOCK_LOCKTEST_CHILD"

// linePrefix starts the lines a child reports to its parent, so that they
// stand out from the test framework's output.
const linePrefix = "LOCKTEST "

// IsChild reports whether the test binary runs as the child started by
// StartChild for the test named name.
func IsChild(name string) bool { return os.Getenv(childEnv) == name }

// Report writes a line for the parent to read with Child.Line.
func Report(format string, args ...any) {
	fmt.Printf(linePrefix+format+"\n", args...)
}

// Child is the test binary run again as a child process, to run one test
// function that takes locks and reports through Report until it is killed.
type Child struct {
	cmd   *exec.Cmd
	lines chan string
	quit  chan struct{} // closed by kill: stop delivering lines
	done  chan struct{} // closed when the reader of the output returns
	once  sync.Once
}

// StartChild runs the test function test of the current test binary in a
// child process, with env added to its environment; in the child,
// IsChild(test) reports true. The child is killed when t ends.
func StartChild(t testing.TB, test string, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(append(os.Environ(), childEnv+"="+test), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Child{cmd: cmd, lines: make(chan string, 64), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), linePrefix); ok {
				select {
				case c.lines <- line:
				case <-c.quit:
				}
			}
		}
	}()
	t.Cleanup(func() { c.kill() })
	return c
}

// Line returns the next line the child reported, failing t if none comes
// within timeout.
func (c *Child) Line(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			t.Fatal("child exited without reporting")
		}
		return line
	case <-time.After(timeout):
		t.Fatalf("no report from the child within %v", timeout)
	}
	return ""
}

// Lines returns the channel of the lines the child reports, closed when it
// exits.
func (c *Child) Lines() <-chan string { return c.lines }

// Kill sends SIGKILL to the child and waits for it to exit. It returns the
// moment the signal was sent.
func (c *Child) Kill(t testing.TB) time.Time {
	t.Helper()
	at := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.kill()
	return at
}

func (c *Child) kill() {
	c.once.Do(func() { close(c.quit) })
	_ = c.cmd.Process.Kill()
	<-c.done
	_ = c.cmd.Wait()
}

// Referee counts the holders of a resource and records the most it saw at
// once.
type Referee struct {
	n, most atomic.Int64
}

// Enter counts a holder in and returns how many hold the resource now.
func (r *Referee) Enter() int64 {
	n := r.n.Add(1)
	for {
		m := r.most.Load()
		if n <= m || r.most.CompareAndSwap(m, n) {
			return n
		}
	}
}

// Leave counts a holder out.
func (r *Referee) Leave() { r.n.Add(-1) }

// Most returns the most holders seen at once.
func (r *Referee) Most() int64 { return r.most.Load() }
