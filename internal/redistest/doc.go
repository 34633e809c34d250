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
//
// # Cluster
//
// [StartCluster] starts a Redis Cluster of three primaries with one replica
// each (six servers with --cluster-enabled yes and a one-second
// --cluster-node-timeout, joined with redis-cli --cluster create) and waits
// until every node reports cluster_state:ok, all nodes agree on the slot
// map and every replica is in sync; this takes about two seconds.
// [SharedCluster] is one cluster per test package, started on first use
// and stopped by [Main]. redis-cli is taken from $REDIS_CLI or PATH (see
// [CLIBinary]); when it is missing, tests fail with the install command.
//
//	c := redistest.SharedCluster(t)
//	rdb := c.Client(t) // a *redis.ClusterClient seeded with every node
//
// [Slot] computes a key's hash slot; [Cluster.PrimaryFor] and
// [Cluster.ReplicaFor] return the nodes serving it. Topology changes, on a
// cluster of the test's own, each wait until every node agrees on the
// result and the cluster is whole again:
//
//   - [Cluster.Failover]: graceful CLUSTER FAILOVER of a key's shard; the
//     replica and the primary swap roles, no acknowledged write is lost.
//   - [Cluster.KillPrimary]: SIGKILL of a key's primary and CLUSTER
//     FAILOVER FORCE on its replica (writes not yet replicated are lost),
//     then the killed node is restarted and rejoins as a replica.
//   - [Cluster.MigrateSlot]: moves a slot and its keys to another primary
//     (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE) while
//     clients keep using it, following ASK and MOVED redirections.
//   - [Cluster.Heal]: restarts nodes a test stopped or killed itself.
//
// # Sentinel
//
// [StartSentinel] starts a primary, a replica and three sentinels
// (quorum two, down-after-milliseconds 1000) and waits until every
// sentinel knows the replica and the other sentinels, about two seconds.
// [Sentinel.FailoverClient] is a redis.NewFailoverClient for it.
// [Sentinel.KillPrimary] kills the primary and waits until every sentinel
// names the replica as the new primary (about two seconds), and
// [Sentinel.RestartOld] brings the killed server back as a replica.
// [Sentinel.Failover] runs SENTINEL FAILOVER. [Sentinel.Primary] and
// [Sentinel.Replica] follow the roles. [SharedSentinel] is one deployment
// per test package, started on first use and stopped by [Main].
//
// # Backends
//
// A [Backend] is one of the shared deployments, standalone, cluster or
// sentinel, started on first use; [Backend.Client] returns a client of the
// right kind for it (redis.UniversalClient). [Backends] lists them, or those
// named in $DISTLOCK_BACKENDS (comma-separated), and [RunBackends] runs a
// test once per backend, as subtests named after them:
//
//	func TestSomething(t *testing.T) {
//		redistest.RunBackends(t, func(t *testing.T, b redistest.Backend) {
//			rdb := b.Client(t)
//			...
//		})
//	}
//
// [Keys] lists keys on every primary of a cluster, as KEYS does on one
// server.
package redistest
