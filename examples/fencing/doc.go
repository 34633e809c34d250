// Package fencing shows how storage protected by a distlock lock uses the
// lease's fencing token to refuse writes from a holder that lost its lease.
//
// A lock alone does not make writes exclusive: a holder that pauses (a long
// GC pause, a stalled network, a suspended VM) past its lease's validity may
// still write after another holder was granted the lock. Every grant comes
// with a fence, mutex.Lease.Fence, greater than the fence of every earlier
// grant of the same key. The storage keeps, next to each value, the highest
// fence that has written it, and refuses a write whose fence is lower. An
// equal fence is the same grant writing again, and is accepted.
//
//	lease, err := m.Lock(ctx, "invoice:42")
//	...
//	err = store.Write(ctx, "invoice:42", value, lease.Fence())
//	if errors.Is(err, fencing.ErrStaleFence) {
//		// A newer holder has written: this one must stop.
//	}
//
// Two stores show the pattern; both implement [Store].
//
// # SQL
//
// [SQLStore] keeps each value in a row of a table with a fence column:
//
//	CREATE TABLE <name> (
//		id    TEXT PRIMARY KEY,
//		value BLOB NOT NULL,
//		fence INTEGER NOT NULL
//	)
//
// and writes with one conditional statement:
//
//	INSERT INTO <name> (id, value, fence) VALUES (?, ?, ?)
//	ON CONFLICT (id) DO UPDATE SET value = excluded.value, fence = excluded.fence
//	WHERE excluded.fence >= <name>.fence
//
// The statement inserts a new row, updates a row whose fence is not higher,
// and leaves a row with a higher fence alone, in which case it reports no
// affected row, and Write returns ErrStaleFence.
//
// The check must be part of the statement that writes. Reading the fence
// first and writing after leaves a gap: a newer holder can write between the
// read and the write, and the older holder's write then overwrites it, which
// is exactly what fencing is meant to prevent. In one statement, the
// database checks and writes under the same row lock (SQLite: under its
// write lock), so no other write can come between them. Where a row always
// exists, "UPDATE <name> SET value = ?, fence = ? WHERE id = ? AND fence <= ?"
// does the same.
//
// The statements are written for SQLite (3.24 or later); PostgreSQL runs
// them with $1, $2, $3 placeholders and BYTEA and BIGINT columns. A driver
// that counts only changed rows as affected (MySQL without clientFoundRows)
// would report an identical write with an equal fence as refused.
//
// [SQLStore.WriteTx] writes within the caller's transaction, so that a
// stale fence can roll back the transaction's other writes too.
//
// # Redis
//
// [RedisStore] keeps each value and its fence in one Redis hash,
// "<prefix>:<key>" with the fields "value" and "fence", and writes with a
// Lua script (sent as EVALSHA) that compares the fences and stores the
// value. Redis runs a script as one step, so the check and the write are
// atomic, and a single key needs no care on Redis Cluster.
//
// The protected data may live on the lock's Redis or another deployment;
// either way, choose one whose durability suits the data (persistence,
// replication). A hash lost by a restart without persistence, or by a
// failover that dropped recent writes, takes its fence with it, and an old
// holder could then write again.
//
// # Keeping fences
//
// The stored fence is the guard: deleting a row or a hash forgets it. To
// delete a value that old holders may still write, keep its fence, for
// example by writing an empty value.
//
// # Errors
//
// Write returns ErrStaleFence when a higher fence has written the value;
// Read returns ErrNotFound for a value never written. Bad input (a nil
// database or client, a bad table name, an empty id or key, a fence that is
// not positive) gets an error wrapping ErrInvalid before any database or
// Redis call. Other errors come from the database or Redis.
//
// The examples run with go test -run Example -v . in this directory, against
// REDIS_URL when it is set and otherwise an embedded in-memory Redis.
package fencing
