// Command fx wires two named lock configurations into an application built
// with go.uber.org/fx, through package distlockfx.
//
// The "orders" configuration is registered with distlockfx.Lock, with
// retries on transient Redis errors; "invoices" inherits it with
// distlockfx.Inherit, so it shares its client, TTL and retries, under a key
// prefix of its own. A billing service gets both Lockers injected by name
// and locks an order, then its invoice. Stopping the application closes
// both configurations.
//
// It connects to REDIS_URL when set (any form that redisurl.Open accepts,
// such as redis://localhost:6379/0 or
// redis+sentinel://sentinel1,sentinel2/mymaster) and otherwise to an
// embedded in-memory Redis, so it runs anywhere:
//
//	go run ./examples/fx
package main
