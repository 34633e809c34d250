//go:build !linux

package bench

import "syscall"

// childAttr returns nil: outside Linux a child process is not tied to the
// runner's life, and the runner's own cleanup stops it.
func childAttr() *syscall.SysProcAttr { return nil }
