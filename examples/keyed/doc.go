// Command keyed keeps per-user balances consistent while many workers update
// them at once, by locking each user by its ID with keyed.Keyed.
//
// Balances are plain Redis strings updated with GET then SET, which loses
// updates when two workers interleave. Deposits lock one user with
// WithLock; transfers lock two users with LockMany, which takes them in the
// same order whatever the argument order, so opposite transfers cannot
// deadlock.
//
// It connects to REDIS_URL when set (any form that redisurl.Open accepts,
// such as redis://localhost:6379/0 or
// redis+sentinel://sentinel1,sentinel2/mymaster) and otherwise to an
// embedded in-memory Redis, so it runs anywhere:
//
//	go run ./examples/keyed
package main
