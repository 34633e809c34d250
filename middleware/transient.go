package middleware

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/mutex"
)

// final lists the errors that no retry can fix: bad input, ownership, a
// closed Mutex, and reentrancy.
var final = []error{
	mutex.ErrInvalid,
	mutex.ErrNotHeld,
	mutex.ErrReleased,
	mutex.ErrReentrant,
	mutex.ErrClosed,
	mutex.ErrNotObtained,
	redis.ErrClosed,
}

// transientPrefixes are the Redis error replies of a server that is not
// ready yet: loading its data set, resharding, without a primary, or a
// replica that a failover is about to promote; and the Cluster redirects
// that go-redis returns once it has followed ClusterOptions.MaxRedirects of
// them (failed connections and TRYAGAIN use that budget too), while a
// failover or a slot migration changes the cluster's layout.
var transientPrefixes = []string{"LOADING", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "MASTERDOWN", "MOVED", "ASK"}

// IsTransient reports whether err is a failure that the same call may not
// meet again a moment later: a refused, reset or broken connection, a
// network timeout, an exhausted connection pool, or one of the Redis replies
// LOADING, TRYAGAIN, CLUSTERDOWN, READONLY and MASTERDOWN, or a Cluster
// redirect (MOVED, ASK) that go-redis stopped following.
//
// It is false for nil, for context errors, for redis.ErrClosed (the client
// was closed) and for every mutex sentinel: ErrInvalid, ErrNotHeld,
// ErrReleased, ErrReentrant, ErrClosed and ErrNotObtained (contention is not
// a failure; see WithRetryOnContention).
func IsTransient(err error) bool {
	if err == nil || isFinal(err) {
		return false
	}
	switch {
	case errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return true
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range transientPrefixes {
			if msg == p || strings.HasPrefix(msg, p+" ") {
				return true
			}
		}
	}
	return false
}

// isFinal reports whether err can never succeed on retry.
func isFinal(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for _, f := range final {
		if errors.Is(err, f) {
			return true
		}
	}
	return false
}
