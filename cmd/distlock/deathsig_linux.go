package main

import "syscall"

// setDeathSignal makes the kernel kill the command if distlock dies (for
// example of SIGKILL) without stopping it, so that it never runs on after
// its lease can no longer be extended.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
