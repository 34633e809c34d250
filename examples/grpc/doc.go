// Command grpc is a small gRPC counter service whose increments are
// serialized per counter with grpcmw, so that replicas sharing one Redis
// never lose an update.
//
// Increment reads a counter, adds one and writes it back: two increments of
// one counter that interleave would lose one of them. The interceptor runs
// the increments of one counter one at a time across every replica, while
// different counters run in parallel. Each write carries the fencing token
// of the call's lease, and the store refuses a write older than the last
// one it accepted.
//
// The service is declared by hand (counter.Counter/Increment, taking a
// google.protobuf.StringValue counter name and returning the new value as a
// google.protobuf.Int64Value), so the example needs no generated code.
//
// It listens on ADDR (default 127.0.0.1:50051) and connects to REDIS_URL
// when set (any form that redisurl.Open accepts, such as
// redis://localhost:6379/0 or
// redis+sentinel://sentinel1,sentinel2/mymaster), otherwise to an embedded
// in-memory Redis. With -call NAME it is a client instead: it increments
// counter NAME on the server at ADDR and prints the new value.
//
//	go run ./examples/grpc
//	go run ./examples/grpc -call visits
package main
