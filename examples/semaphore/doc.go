// Command semaphore bounds the concurrent calls of several replicas to an
// external API: three replicas, each with four workers, share two permits
// of one semaphore key, so that the API never sees more than two calls at
// once, whichever replicas make them.
//
// It connects to REDIS_URL when set (any form that redisurl.Open accepts)
// and otherwise to an embedded in-memory Redis, so it runs anywhere:
//
//	go run ./examples/semaphore
package main
