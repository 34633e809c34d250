// Package redisurl gives the example programs their Redis: the server at
// REDIS_URL when it is set, otherwise an embedded in-memory Redis
// (miniredis), so that every example runs on a machine without Redis.
package redisurl
