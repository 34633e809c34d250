// Package chaos is a Jepsen-style fault suite for distlock.
//
// A run starts its own redis-server, a fenced store in the parent process
// and several client processes, made by re-executing the running binary
// with CHAOS_CLIENT set (see ClientMain). Each client loops: Lock (mostly
// one hot key, sometimes two keys), check the lease, write (key, fence) to
// the fenced store, check again, Unlock, recording every operation as JSON
// lines. Meanwhile a nemesis injects one fault: none, a holder paused past
// its TTL (SIGSTOP/SIGCONT), a client killed (SIGKILL), or Redis paused past
// the TTL. The checkers (Check) then read the histories and report
// overlapping believed-valid intervals, hard overlaps (both sides before
// their own mutex.Deadline), fence regressions and stale writes.
//
// The self-test scenario runs a deliberately broken lock (BrokenLocker)
// that the checkers must flag, proving that they can fail.
//
// The binary is cmd/chaos; see README.md for what exists and what remains.
package chaos
