// Package httpmw serializes HTTP requests by key across every process that
// shares one Redis: two requests for the same account, order or document
// never run their handlers at the same time, while requests for different
// keys run in parallel.
//
//	mux := http.NewServeMux()
//	serialize := httpmw.Serialize(locker, httpmw.Namespace("account", httpmw.PathValue("id")))
//	mux.Handle("POST /accounts/{id}/deposit", serialize(depositHandler))
//
// For each request the middleware, in this order:
//
//  1. lets the request through untouched if a WithSkip or WithSkipMethods
//     predicate matches it;
//  2. extracts the key with the KeyFunc and validates it: a missing key
//     answers 400, a key that is longer than MaxKeyLen bytes, not valid
//     UTF-8 or that contains control characters answers 400, before any
//     Redis call (a KeyFunc that is itself misconfigured, such as one of
//     KeyedPathValue with a nil parse function, answers 500);
//  3. joins a lease on the same key that the request's context already holds
//     through the same Locker (see [mutex.HeldLease]), so nested middleware
//     does not wait for itself;
//  4. obtains the lock: one attempt (TryLock) by default, or a Lock bounded by
//     the WithWait budget;
//  5. runs the handler with [mutex.RunLocked]: the lease is recorded in the
//     request's context ([LeaseFrom]), kept extended while the handler runs,
//     the request's context is cancelled with a cause wrapping
//     [mutex.ErrNotHeld] if the lease is lost, and the lease is released when
//     the handler returns, even if it panics.
//
// # Lockers
//
// The Locker may be a *mutex.Mutex or any decorated Locker; a chain is
// written outermost first:
//
//	l := middleware.Chain(m, otellock.Middleware(), middleware.Retry())
//	// l is otellock(Retry(m)); the middleware locks through it:
//	httpmw.Serialize(l, key)
//
// Waiting for a busy key is the job of WithWait, not of a retrying
// decorator. A lease that a decorator such as middleware.AutoExtend already
// extends is not extended a second time. Code under the middleware that
// locks the same key again must use the same Locker to join the held lease:
// [mutex.WithLock] with another Locker over the same Mutex fails at once
// with [mutex.ErrReentrant] rather than waiting for itself.
//
// # Answers
//
// The default answers are short fixed texts that never reveal Redis
// addresses, lock tokens or internal errors:
//
//	missing key               400 Bad Request          "missing lock key"
//	invalid key               400 Bad Request          "invalid lock key"
//	path value that does not
//	  parse (KeyedPathValue)  400 Bad Request          `invalid path value "id"` (the wildcard's name)
//	key busy                  409 Conflict             "resource busy", with Retry-After
//	request ended while
//	  waiting for the lock    503 Service Unavailable  "request ended"
//	Redis failure, or no
//	  answer within WithWait  503 Service Unavailable  "lock service unavailable"
//	misconfigured middleware  500 Internal Server Error "lock misconfigured"
//
// A busy key answers 409 Conflict because the request conflicts with the
// current state of the resource (another request is changing it) and the
// client can repeat it once that request is done. 423 Locked belongs to
// WebDAV, 429 Too Many Requests blames the client's rate, and 503 tells load
// balancers that the server is unhealthy. Retry-After is the remaining time
// of the holder's lease, rounded up to whole seconds, at least 1 (and 1 when
// no attempt saw the holder): when the holder finishes earlier the resource
// frees up earlier. WithBusyStatus changes the status; WithErrorHandler
// replaces every answer.
//
// One outage gets one answer: every request that Redis does not answer
// answers 503 "lock service unavailable", whether it fails fast or waits
// with WithWait, and whatever error its Redis call ends with; the busy
// answer means that the key was held. In detail, contention (an error of the
// Locker wrapping mutex.ErrNotObtained) answers busy when an attempt found
// the key held (the one attempt, or one made before the WithWait budget ran
// out): the error passed to the hook is then a *mutex.NotObtainedError that
// names the key, with context.DeadlineExceeded as its cause for a budget
// that ran out. Any other error of the Locker is a Redis failure, even if
// the budget ran out meanwhile. A budget can also run out with no attempt
// seen to find the key held: either Redis did not answer within it, or the
// request waited behind other requests for the same key through the same
// Mutex and made no attempt of its own. The middleware then checks the key
// with the Locker's Check, for at most 250ms: if Redis answers, the request
// answers busy, with an error that names the key; if not, it is a Redis
// failure. The budget and that check bound Redis calls only on a go-redis
// client with ContextTimeoutEnabled (clients from redisurl.Open have it); on
// others a call that gets no reply ends with the client's read timeout. The
// request's own end (its client gave up, or a server deadline passed)
// answers 503 "request ended" instead.
//
// A Redis failure answers 503: the middleware fails closed, because running
// the handler without the lock would break the very guarantee it exists for.
// WithFailOpen runs the handler without a lock instead ([LeaseFrom] then
// returns nil); the error still reaches the WithErrorHook hook. A busy key,
// or a request whose own context ended, never runs its handler without the
// lock, even with WithFailOpen.
//
// # Routers
//
// Serialize returns a plain func(http.Handler) http.Handler, so it works with
// http.ServeMux and with chi without adapters. Path values exist once the
// router has matched a route, so wrap the route's handler, not the whole
// router: mux.Handle(pattern, serialize(h)), or with chi
// r.With(serialize).Post(pattern, h), or Use in a sub-router whose mount
// pattern holds the wildcard (r.Route("/orders/{id}", ...)). chi sets the
// standard path values, so PathValue works with chi routes; a KeyFunc
// calling chi.URLParam works as well. Middleware that chi's top router Use
// runs before routing and sees no wildcard: its requests answer 400.
//
// # Lease loss
//
// When the lease is lost (Redis lost the key, or it could not be extended
// in time) the request's context is cancelled; context.Cause of it wraps
// [mutex.ErrNotHeld]. The handler owns the response and should stop its
// work. Pass [mutex.Lease.Fence] of [LeaseFrom] to the storage you protect,
// so that it can reject writes of a request whose lease was lost.
package httpmw
