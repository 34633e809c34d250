package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// workerProc is one running worker process.
type workerProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	enc     *json.Encoder
	reports chan workerReport
	readErr chan error
	stderr  *limitedWriter
	done    chan struct{}
}

// procSet tracks the live worker processes, so that every exit path,
// a signal included, can kill them.
type procSet struct {
	mu    sync.Mutex
	procs map[*workerProc]struct{}
}

func newProcSet() *procSet { return &procSet{procs: map[*workerProc]struct{}{}} }

// start runs exe as a worker with task t.
func (ps *procSet) start(exe string, t task) (*workerProc, error) {
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.SysProcAttr = childAttr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &workerProc{
		cmd:     cmd,
		stdin:   stdin,
		enc:     json.NewEncoder(stdin),
		reports: make(chan workerReport, 2),
		readErr: make(chan error, 1),
		stderr:  &limitedWriter{w: &strings.Builder{}, n: 8192},
		done:    make(chan struct{}),
	}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	ps.mu.Lock()
	ps.procs[p] = struct{}{}
	ps.mu.Unlock()
	go func() {
		// Read every report, then reap the process: Wait closes the pipe,
		// so it must come after the last read.
		dec := json.NewDecoder(stdout)
		for {
			var r workerReport
			if err := dec.Decode(&r); err != nil {
				p.readErr <- err
				break
			}
			p.reports <- r
		}
		_ = cmd.Wait()
		ps.mu.Lock()
		delete(ps.procs, p)
		ps.mu.Unlock()
		close(p.done)
	}()
	if err := p.enc.Encode(t); err != nil {
		p.kill()
		return nil, fmt.Errorf("send task to worker: %w", err)
	}
	return p, nil
}

// next waits up to timeout for the worker's next report.
func (p *workerProc) next(timeout time.Duration) (workerReport, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-p.reports:
		if r.Err != "" {
			return r, fmt.Errorf("worker: %s", r.Err)
		}
		return r, nil
	case err := <-p.readErr:
		if errors.Is(err, io.EOF) {
			err = errors.New("exited without a report")
		}
		select {
		case <-p.done:
		case <-time.After(time.Second):
		}
		return workerReport{}, fmt.Errorf("worker: %w%s", err, p.stderrTail())
	case <-t.C:
		return workerReport{}, fmt.Errorf("worker: no report within %v%s", timeout, p.stderrTail())
	}
}

func (p *workerProc) stderrTail() string {
	p.stderr.mu.Lock()
	defer p.stderr.mu.Unlock()
	if s := strings.TrimSpace(p.stderr.w.String()); s != "" {
		return "; its stderr: " + s
	}
	return ""
}

// finish closes the worker's standard input, which tells it to clean up
// and exit, and kills it if it has not exited within grace.
func (p *workerProc) finish(grace time.Duration) {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

func (p *workerProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// killAll kills every live worker and waits for them.
func (ps *procSet) killAll() {
	ps.mu.Lock()
	all := make([]*workerProc, 0, len(ps.procs))
	for p := range ps.procs {
		all = append(all, p)
	}
	ps.mu.Unlock()
	for _, p := range all {
		p.kill()
	}
}
