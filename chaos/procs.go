package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// clients owns the client processes of a scenario.
type clients struct {
	exe  string
	dir  string
	base ClientConfig
	mu   sync.Mutex
	next int
	// procs are the clients not known to have exited.
	procs map[int]*proc
	all   []*proc
}

func (c *clients) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg := c.base
	cfg.ID = c.next
	c.next++
	cfg.Seed = c.base.Seed*1000003 + uint64(cfg.ID)
	cfg.History = filepath.Join(c.dir, "client-"+strconv.Itoa(cfg.ID)+".jsonl")
	logf, err := os.Create(filepath.Join(c.dir, "client-"+strconv.Itoa(cfg.ID)+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.exe)
	cmd.Env = append(os.Environ(), cfg.env()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start client: %w", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	id := cfg.ID
	go func() {
		_ = cmd.Wait()
		c.mu.Lock()
		delete(c.procs, id)
		c.mu.Unlock()
		close(p.done)
	}()
	c.procs[id] = p
	c.all = append(c.all, p)
	return nil
}

// byPID returns the live client with pid.
func (c *clients) byPID(pid int) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.cmd.Process.Pid == pid {
			return p
		}
	}
	return nil
}

func (c *clients) random(rng *rand.Rand) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]int, 0, len(c.procs))
	for id := range c.procs {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Ints(ids)
	return c.procs[ids[rng.IntN(len(ids))]]
}

// wait waits for every client until limit, then kills what is left.
func (c *clients) wait(limit time.Time) {
	c.mu.Lock()
	all := append([]*proc(nil), c.all...)
	c.mu.Unlock()
	for _, p := range all {
		select {
		case <-p.done:
		case <-time.After(time.Until(limit)):
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func (c *clients) killAll() {
	c.mu.Lock()
	all := append([]*proc(nil), c.all...)
	c.mu.Unlock()
	for _, p := range all {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
