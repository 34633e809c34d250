package redistest

import "syscall"

// sysProcAttr makes the kernel kill redis-server if the test process dies
// without stopping it (for example on a test timeout panic).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
