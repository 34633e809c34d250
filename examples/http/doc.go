// Command http is a small account service whose deposits are serialized per
// account with httpmw, so that replicas sharing one Redis never lose an
// update.
//
// A deposit reads the balance, adds the amount and writes it back: two
// deposits to one account that interleave would lose one of them. The
// middleware runs the deposits of one account one at a time across every
// replica, while deposits to different accounts and reads run in parallel.
// Each write carries the fencing token of the request's lease, and the
// store refuses a write older than the last one it accepted, so a request
// whose lease was lost cannot overwrite a newer balance.
//
// It listens on ADDR (default 127.0.0.1:8080) and connects to REDIS_URL when
// set (any form that redisurl.Open accepts, such as redis://localhost:6379/0
// or redis+sentinel://sentinel1,sentinel2/mymaster), otherwise to an
// embedded in-memory Redis:
//
//	go run ./examples/http
//	curl -X POST 'localhost:8080/accounts/42/deposit?amount=5'
//	curl localhost:8080/accounts/42
package main
