//go:build !unix

package main

import (
	"os"
	"os/exec"
)

// forwarded are the signals that distlock passes on to the command.
var forwarded = []os.Signal{os.Interrupt}

// ignoreStop does nothing: job control is a Unix feature.
func ignoreStop() {}

// setProcAttr leaves the command in distlock's process group: process
// groups are a Unix feature.
func setProcAttr(*exec.Cmd) {}

// signalGroup sends sig to p, or kills it where signals cannot be sent.
func signalGroup(p *os.Process, sig os.Signal) error {
	if err := p.Signal(sig); err != nil {
		return p.Kill()
	}
	return nil
}

// exitCode returns the exit code of a command that ended as state says.
func exitCode(state *os.ProcessState) int {
	return state.ExitCode()
}

// signalNumber returns the number of sig, for an exit code: that of
// SIGINT.
func signalNumber(os.Signal) int { return 2 }
