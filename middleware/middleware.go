package middleware

import "github.com/distlock/distlock/mutex"

// Middleware decorates a Locker with another behaviour.
type Middleware func(mutex.Locker) mutex.Locker

// Chain wraps l in ms so that the first middleware is the outermost:
// Chain(l, A, B, C) is A(B(C(l))). A call goes through A first and reaches
// l last.
func Chain(l mutex.Locker, ms ...Middleware) mutex.Locker {
	for i := len(ms) - 1; i >= 0; i-- {
		l = ms[i](l)
	}
	return l
}
