// Package serialize holds what the HTTP and gRPC middleware share: checking
// a lock key taken from untrusted input, the error of a misconfigured key
// function, and obtaining a lease within a wait budget with errors sorted by
// what the caller should answer.
package serialize
