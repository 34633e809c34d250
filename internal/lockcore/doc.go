// Package lockcore is the Redis engine shared by the semaphore and rwmutex
// packages: counted and shared leases on resources, granted by Lua scripts
// that run on the server's clock, with waiting woken by pub/sub.
//
// A resource is a set of Redis keys under one hash tag, "<prefix>:{<key>}"
// (the holders, a sorted set of owner tokens scored by their expiry), and
// the same name followed by ":f" (fences), ":q" (queue), ":d" (queue
// deadlines) and ":qw" (queued writers). Holders that stop extending drop
// out when their expiry passes; scripts prune them before every decision.
// What a holder may share with others is the mode's business: a semaphore
// admits up to a number of permits, a read-write lock any number of
// readers or one writer.
//
// Waiting comes in two forms. Plain waiting (semaphores without FIFO): a
// release is announced on the channel named like the holders key, and the
// waiters of one Core take turns per key, so that a release costs one
// attempt per process. Queued waiting (FIFO semaphores, read-write locks):
// every waiter joins a queue in Redis; releases, and a periodic refresh by
// every process with waiters, wake exactly the waiters that may go, on the
// wake channel of their process, "<prefix>:w:<Core id>".
package lockcore
