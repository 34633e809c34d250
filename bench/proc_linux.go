package bench

import "syscall"

// childAttr makes a child process (redis-server, a worker) receive SIGKILL
// when the runner dies, so that none outlives it even after a SIGKILL.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
