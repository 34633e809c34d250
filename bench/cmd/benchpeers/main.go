// Command benchpeers compares distlock with redsync, redislock and
// rueidislock on a redis-server it starts, and writes the results to
// docs/bench; see package github.com/distlock/distlock/bench and
// ../../README.md.
//
//	go run ./cmd/benchpeers [-duration 500ms] [-rounds 2] [-only serial,parallel] [-out dir] [-redis host:port] [-json]
//
// The binary re-executes itself as the worker processes.
package main

import (
	"os"

	"github.com/distlock/distlock/bench"
)

func main() {
	if bench.IsWorker() {
		os.Exit(bench.WorkerMain())
	}
	os.Exit(bench.Main(os.Args[1:], os.Stdout, os.Stderr))
}
