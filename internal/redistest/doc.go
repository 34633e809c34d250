// Package redistest starts real redis-server processes for tests.
//
// Every server runs on a free 127.0.0.1 port, without persistence
// (--save "" --appendonly no), in its own temporary directory, with its
// output captured to a log file whose tail is reported when it fails to
// start. Servers are stopped when the test that started them ends.
//
// Typical use:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		srv := redistest.Shared(t) // reused by the whole package; use unique keys
//		rdb := srv.Client(t)
//		...
//	}
//
// Tests that stop, kill, pause or restart a server, or that need special
// configuration, start their own with [Start]. [Proxy] sits between a client
// and a server to inject network faults (stalls, dropped connections).
//
// The redis-server binary is taken from $REDIS_SERVER, or else looked up in
// PATH. When it cannot be found, tests fail (they are never skipped) with a
// message naming the command that installs it.
//
// A [Server] is the building block for larger topologies: replicas,
// Sentinel and Cluster nodes are Servers started with the relevant
// arguments (see [WithArgs] and [WithPort]).
package redistest
