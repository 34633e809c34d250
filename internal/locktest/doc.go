// Package locktest holds test helpers of the semaphore, rwmutex and
// election packages: child processes that hold locks until they are
// killed, and a referee that counts holders.
package locktest
