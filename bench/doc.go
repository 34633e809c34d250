// Package bench compares distlock with other Redis lock libraries for Go:
// go-redsync/redsync (v4, goredis/v9 pool), bsm/redislock and
// rueidis/rueidislock. It lives in a module of its own, so that those
// libraries never become dependencies of distlock, and uses only distlock's
// public packages mutex and middleware. Command cmd/benchpeers runs it
// (make bench-peers from the repository root); README.md tells how to read
// the results.
//
// One run starts a redis-server of its own (--save "" --appendonly no, on a
// free loopback port) unless -redis names one, and measures every library in
// turn, distlock in both its plain and FIFO modes, in these scenarios:
//
//   - serial: one goroutine locks and unlocks one key in a loop;
//   - parallel: 8, 64 and 256 goroutines of one process, and 64 goroutines in
//     4 processes, each goroutine on a key of its own, one locker per process;
//   - hot: 2, 16 and 64 waiters, spread over up to 4 processes, on one key
//     held 5ms per grant;
//   - fifo: 8 waiters in 4 processes on one key, counting overtakes;
//   - soak: 10,000 leases on distinct keys held a few seconds with a short TTL
//     and automatic extension.
//
// Each measurement starts fresh worker processes: the binary re-executes
// itself (IsWorker tells a worker), reads its task and then its measurement
// window as JSON lines on standard input, and answers with JSON lines on
// standard output. All processes time the window and their events with the
// host's wall clock (Unix nanoseconds), which they share. The runner samples
// Redis at the window's edges: INFO commandstats after CONFIG RESETSTAT
// (commands called from scripts included; INFO, CONFIG and PING left out)
// and INFO cpu. Each worker adds its own getrusage CPU time and, in the serial
// and parallel scenarios, its runtime.MemStats allocation count over the
// window.
//
// The libraries run alternately, in an order rotated every round, for
// -rounds rounds (2 by default); the report shows each case's best round
// (highest ops/s, or highest utilization on the hot key) and results.json
// keeps all of them. Latency and handoff percentiles are also given as
// ratios to the median PING round trip measured by the runner at the start
// of the same round.
package bench
