package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/distlock/distlock/mutex"
)

// waitFlag is the value of --wait: a duration, 0 for one attempt, or
// "forever".
type waitFlag struct {
	d       time.Duration
	forever bool
}

func (w *waitFlag) String() string {
	if w.forever {
		return "forever"
	}
	return w.d.String()
}

func (w *waitFlag) Set(s string) error {
	if s == "forever" {
		w.d, w.forever = 0, true
		return nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return errors.New(`want a duration such as 30s, 0, or "forever"`)
	case d < 0:
		return errors.New("negative duration")
	}
	w.d, w.forever = d, false
	return nil
}

// Intervals of the progress line shown while waiting on a terminal.
const (
	progressEvery = 200 * time.Millisecond
	holderEvery   = 2 * time.Second
)

func runCmd(args []string, stderr io.Writer) int {
	fset, c := newFlags("run", "run --key KEY [flags] [--] COMMAND [ARG...]", stderr)
	key := fset.String("key", "", "the key to hold while COMMAND runs (required)")
	ttl := fset.Duration("ttl", 30*time.Second, "lease time-to-live; the lease is extended every third of it while COMMAND runs")
	var wait waitFlag
	fset.Var(&wait, "wait", `how long to wait for the key: 0 fails at once if it is held, a duration waits that long, "forever" waits without limit`)
	fifo := fset.Bool("fifo", false, "queue for the key in Redis, granted in the order of arrival (every holder of the key must use --fifo)")
	owner := fset.String("owner", "", "holder label that status and list show (default <hostname>:<pid>)")
	grace := fset.Duration("grace", 10*time.Second, "when the lease is lost, time between SIGTERM and SIGKILL to COMMAND")
	// The first argument that is not a flag starts the command.
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	command := fset.Args()
	switch {
	case *key == "":
		fmt.Fprintln(stderr, "distlock run: --key is required")
		return exitUsage
	case len(command) == 0:
		fmt.Fprintln(stderr, "distlock run: no command to run")
		return exitUsage
	case *grace < 0:
		fmt.Fprintln(stderr, "distlock run: negative --grace")
		return exitUsage
	}
	m, closeAll, code := c.open(mutex.Config{TTL: *ttl, FIFO: *fifo, Owner: *owner}, stderr)
	if code != exitOK {
		return code
	}
	defer closeAll()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	ignoreStop()

	lease, code := acquire(m, *key, wait, sigs, stderr)
	if lease == nil {
		return code
	}
	return hold(m, lease, *key, command, *grace, sigs, stderr)
}

// acquire takes key, waiting as wait says, and returns the lease, or the
// exit code. A signal stops the wait.
func acquire(m *mutex.Mutex, key string, wait waitFlag, sigs <-chan os.Signal, stderr io.Writer) (mutex.Lease, int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if wait.d > 0 {
		var cancelWait context.CancelFunc
		ctx, cancelWait = context.WithTimeout(ctx, wait.d)
		defer cancelWait()
	}
	stop := make(chan struct{})
	interrupted := make(chan os.Signal, 1)
	go func() {
		var sig os.Signal
		select {
		case sig = <-sigs:
			cancel()
		case <-stop:
		}
		interrupted <- sig
	}()
	progressDone := make(chan struct{})
	if (wait.forever || wait.d > 0) && isTerminal(os.Stderr) {
		go func() {
			defer close(progressDone)
			showProgress(m, key, stop, stderr)
		}()
	} else {
		close(progressDone)
	}

	var (
		lease mutex.Lease
		err   error
	)
	if wait.forever || wait.d > 0 {
		lease, err = m.Lock(ctx, key)
	} else {
		lease, err = m.TryLock(ctx, key)
	}
	close(stop)
	sig := <-interrupted
	<-progressDone
	if sig != nil {
		if lease != nil {
			uctx, cancel := context.WithTimeout(context.Background(), mutex.UnlockTimeout)
			defer cancel()
			_ = lease.Unlock(uctx)
		}
		fmt.Fprintf(stderr, "distlock: %v while waiting for %q\n", sig, key)
		return nil, exitSignal + signalNumber(sig)
	}
	switch {
	case err == nil:
		return lease, exitOK
	case errors.Is(err, mutex.ErrNotObtained):
		fmt.Fprintf(stderr, "distlock: %s\n", heldBy(m, key, wait))
		return nil, exitNotObtained
	}
	return nil, failed(stderr, fmt.Sprintf("lock %q", key), err)
}

// heldBy says who holds key, for a wait that gave up.
func heldBy(m *mutex.Mutex, key string, wait waitFlag) string {
	msg := fmt.Sprintf("%q is held", key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if infos, err := m.Inspect(ctx, key); err == nil {
		switch info := infos[0]; {
		case info.Held:
			msg += " " + holder(info)
		case info.Queue > 0:
			msg = fmt.Sprintf("%q has %d FIFO waiters", key, info.Queue)
		}
	}
	if wait.d > 0 {
		msg += fmt.Sprintf("; gave up after %v", wait.d)
	}
	return msg
}

// showProgress keeps a line on stderr, a terminal, with the time waited
// for key and its holder, until stop is closed, and then clears it.
func showProgress(m *mutex.Mutex, key string, stop <-chan struct{}, stderr io.Writer) {
	start := time.Now()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var holder string
	var looked time.Time
	shown := false
	for {
		select {
		case <-stop:
			if shown {
				fmt.Fprint(stderr, "\r\033[K")
			}
			return
		case <-tick.C:
		}
		if time.Since(looked) >= holderEvery {
			looked = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if infos, err := m.Inspect(ctx, key); err == nil && infos[0].Owner != "" {
				holder = " (held by " + infos[0].Owner + ")"
			}
			cancel()
		}
		fmt.Fprintf(stderr, "\r\033[Kdistlock: waiting for %q%s: %v", key, holder, time.Since(start).Truncate(100*time.Millisecond))
		shown = true
	}
}

// hold runs command under lease and returns distlock's exit code.
func hold(m *mutex.Mutex, lease mutex.Lease, key string, command []string, grace time.Duration, sigs <-chan os.Signal, stderr io.Writer) int {
	var (
		code int
		lost error
	)
	err := mutex.RunLocked(context.Background(), m, lease, func(ctx context.Context) error {
		code, lost = runChild(ctx, lease, key, command, grace, sigs, stderr)
		return nil
	})
	switch {
	case lost != nil:
		return exitLeaseLost
	case errors.Is(err, mutex.ErrNotHeld):
		fmt.Fprintf(stderr, "distlock: the lease on %q was lost before the command ended: %v\n", key, err)
		return exitLeaseLost
	case err != nil:
		// The key expires with its TTL.
		fmt.Fprintf(stderr, "distlock: release %q: %v\n", key, err)
	}
	return code
}

// runChild runs command while ctx, which ends with the lease, lasts. It
// passes the signals from sigs on to the command's process group, and
// stops the command when the lease is lost: SIGTERM, then SIGKILL after
// grace. It returns the exit code, and the cause of the loss, if any.
func runChild(ctx context.Context, lease mutex.Lease, key string, command []string, grace time.Duration, sigs <-chan os.Signal, stderr io.Writer) (int, error) {
	select {
	case sig := <-sigs:
		fmt.Fprintf(stderr, "distlock: %v before the command started\n", sig)
		return exitSignal + signalNumber(sig), nil
	default:
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// In a process group of its own, the command cannot read from the
	// terminal: it would be stopped. It reads an empty input instead.
	if !isTerminal(os.Stdin) {
		cmd.Stdin = os.Stdin
	}
	cmd.Env = append(os.Environ(),
		"DISTLOCK_KEY="+key,
		"DISTLOCK_FENCE="+strconv.FormatInt(lease.Fence(), 10),
	)
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "distlock: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return exitNotFound, nil
		}
		return exitCannotRun, nil
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var (
		lost  error
		done  = ctx.Done()
		kill  <-chan time.Time
		timer *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-exited:
			if cmd.ProcessState == nil {
				return exitFailure, lost
			}
			return exitCode(cmd.ProcessState), lost
		case sig := <-sigs:
			_ = signalGroup(cmd.Process, sig)
		case <-done:
			done = nil
			lost = context.Cause(ctx)
			fmt.Fprintf(stderr, "distlock: %v; stopping the command\n", lost)
			_ = signalGroup(cmd.Process, syscall.SIGTERM)
			timer = time.NewTimer(grace)
			kill = timer.C
		case <-kill:
			kill = nil
			fmt.Fprintf(stderr, "distlock: the command did not stop within %v of SIGTERM; killing it\n", grace)
			_ = signalGroup(cmd.Process, syscall.SIGKILL)
		}
	}
}
