//go:build unix

package main

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// forwarded are the signals that distlock passes on to the command: it
// catches them, so that they never end distlock while it holds a key.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2}

// ignoreStop makes distlock ignore SIGTSTP (Ctrl-Z on a terminal): a
// stopped distlock would stop extending the lease while the command, in a
// process group of its own, runs on.
func ignoreStop() { signal.Ignore(syscall.SIGTSTP) }

// setProcAttr starts the command in a process group of its own, so that a
// signal reaches the processes it starts too.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(cmd.SysProcAttr)
}

// signalGroup sends sig to the process group of p.
func signalGroup(p *os.Process, sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return p.Signal(sig)
	}
	return syscall.Kill(-p.Pid, s)
}

// exitCode returns the exit code of a command that ended as state says:
// its own, or exitSignal plus the signal that killed it.
func exitCode(state *os.ProcessState) int {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignal + int(ws.Signal())
	}
	return state.ExitCode()
}

// signalNumber returns the number of sig, for an exit code.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return int(syscall.SIGINT)
}
