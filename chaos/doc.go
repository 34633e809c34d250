// Package chaos is a Jepsen-style fault suite for distlock.
//
// A run starts its own redis-server (or a Redis Cluster or a Sentinel
// deployment, through internal/redistest), a fenced store in the parent
// process and several client processes, made by re-executing the running
// binary with CHAOS_CLIENT set (see ClientMain). Each client loops: Lock (mostly
// one hot key, sometimes two keys), check the lease, write (key, fence) to
// the fenced store, check again, Unlock, recording every operation as JSON
// lines. Meanwhile a nemesis injects one kind of fault (see Scenarios and
// the Fault constants): paused, stalled or killed clients, a paused,
// restarted or full Redis, a proxy that delays, resets or drops replies,
// SCRIPT FLUSH, CLIENT PAUSE and CLIENT KILL, failovers (graceful, or a
// killed primary whose replica lacks recent grants) and slot migrations. A
// Watcher follows the lock keys through keyspace notifications on every
// primary.
//
// The checkers (Check) then read the histories and report overlapping
// believed-valid intervals, hard overlaps (both sides before their own
// mutex.Deadline), fence regressions, stale writes, lost grants, unlocks
// reported failed that released, lost-lease notice lag, stalls, leases a
// failover lost, and what was left behind. A scenario passes when it keeps
// the promises it is expected to keep (ExpectSafe, ExpectUnsafe); the
// self-test runs a deliberately broken lock (BrokenLocker) that the
// checkers must flag (ExpectFlagged), proving that they can fail.
//
// The binary is cmd/chaos (make chaos at the repository root); README.md
// describes the scenarios and checkers, and docs/guarantees.md which
// promise each scenario demonstrates.
package chaos
