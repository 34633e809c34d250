// Command quickstart locks a key, extends the lease and unlocks it.
//
// It connects to REDIS_URL when set (for example redis://localhost:6379/0)
// and otherwise to an embedded in-memory Redis, so it runs anywhere:
//
//	go run ./examples/quickstart
package main
