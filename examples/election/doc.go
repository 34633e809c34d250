// Command election runs a periodic job on one replica of three: the
// replicas campaign for the job's name, the leader runs the job while its
// term lasts, and when it stops, another replica takes over at once. An
// observer prints every change of leader.
//
// It connects to REDIS_URL when set (any form that redisurl.Open accepts)
// and otherwise to an embedded in-memory Redis, so it runs anywhere:
//
//	go run ./examples/election
package main
