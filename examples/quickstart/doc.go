// Command quickstart locks a key, extends the lease and unlocks it.
//
// It connects to REDIS_URL when set (any form that redisurl.Open accepts,
// such as redis://localhost:6379/0 or
// redis+sentinel://sentinel1,sentinel2/mymaster) and otherwise to an
// embedded in-memory Redis, so it runs anywhere:
//
//	go run ./examples/quickstart
package main
