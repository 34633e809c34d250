// Command chaos runs distlock's fault scenarios and prints one row per
// scenario as a markdown table (and JSON into the work directory). It exits
// 1 when a scenario breaks a promise, or the self-test is not flagged.
//
//	go run ./cmd/chaos -duration 5s -clients 5
//
// The binary re-executes itself as the client processes. Flags: -list,
// -scenarios, -ci, -clients, -duration, -ttl, -seed, -dir, -no-retries;
// see ../../README.md.
package main
