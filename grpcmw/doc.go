// Package grpcmw serializes gRPC calls by key across every process that
// shares one Redis: two calls for the same account, order or document never
// run their handlers at the same time, while calls for different keys run in
// parallel.
//
//	key := grpcmw.Namespace("account", grpcmw.FromRequest(func(r *pb.DepositRequest) string {
//		return r.GetAccount()
//	}))
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptor(locker, key)),
//		grpc.ChainStreamInterceptor(grpcmw.StreamServerInterceptor(locker, grpcmw.Metadata("x-account"))),
//	)
//
// For each call the interceptor, in this order:
//
//  1. lets the call through untouched if a WithSkip predicate matches its
//     full method name, or if the KeyFunc returns ok == false;
//  2. validates the key: an empty key, a key longer than MaxKeyLen bytes,
//     not valid UTF-8 or containing control characters, and a KeyFunc error,
//     give codes.InvalidArgument before any Redis call (a KeyFunc that is
//     itself misconfigured, such as one of KeyedFromRequest with a nil key
//     function, gives Internal);
//  3. joins a lease on the same key that the call's context already holds
//     through the same Locker (see [mutex.HeldLease]);
//  4. obtains the lock: one attempt (TryLock) by default, or a Lock bounded by
//     the WithWait budget;
//  5. runs the handler with [mutex.RunLocked]: the lease is recorded in the
//     call's context ([LeaseFrom]), kept extended while the handler runs, the
//     call's context is cancelled with a cause wrapping [mutex.ErrNotHeld] if
//     the lease is lost, and the lease is released when the handler returns,
//     even if it panics.
//
// A stream interceptor runs before the first message is received, so its
// KeyFunc gets a nil req: take the key of a stream from its metadata
// ([Metadata]) or its method.
//
// # Lockers
//
// The Locker may be a *mutex.Mutex or any decorated Locker; a chain is
// written outermost first:
//
//	l := middleware.Chain(m, otellock.Middleware(), middleware.Retry())
//	// l is otellock(Retry(m)); the middleware locks through it:
//	grpcmw.UnaryServerInterceptor(l, key)
//
// Waiting for a busy key is the job of WithWait, not of a retrying
// decorator. A lease that a decorator such as middleware.AutoExtend already
// extends is not extended a second time.
//
// # Status codes
//
// Status messages are short fixed texts that never reveal Redis addresses,
// lock tokens or internal errors:
//
//	missing or invalid key                 InvalidArgument   "missing lock key", "invalid lock key"
//	request that KeyedFromRequest
//	  cannot key                           InvalidArgument   "invalid lock key in request"
//	key busy (one attempt, or the
//	  WithWait budget used up)             Aborted           "resource busy", with a RetryInfo detail
//	the call's own deadline passed or it
//	  was cancelled while waiting          DeadlineExceeded, Canceled
//	Redis failure, or no answer
//	  within the WithWait budget           Unavailable       "lock service unavailable"
//	misconfigured interceptor              Internal          "lock misconfigured"
//
// A busy key gives Aborted, the code gRPC reserves for concurrency
// conflicts that the client may retry at a higher level, whether the
// interceptor made one attempt or waited its whole WithWait budget:
// DeadlineExceeded is kept for the call's own deadline, so that a client
// can tell "my deadline was too short" from "someone else holds the
// resource". The RetryInfo detail (google.rpc.RetryInfo) carries the
// remaining time of the holder's lease; it is left out when no attempt saw
// the holder. WithBusyCode picks another code, such as Unavailable for
// clients whose retry policy retries it.
//
// One outage gets one answer: every call that Redis does not answer fails
// with Unavailable, whether it fails fast or waits with WithWait, and
// whatever error its Redis call ends with; the busy answer means that the
// key was held. In detail, contention (an error of the Locker wrapping
// mutex.ErrNotObtained) gets the busy code when an attempt found the key
// held (the one attempt, or one made before the WithWait budget ran out):
// the error passed to the hook is then a *mutex.NotObtainedError that names
// the key, with context.DeadlineExceeded as its cause for a budget that ran
// out. Any other error of the Locker is a Redis failure, even if the budget
// ran out meanwhile. A budget can also run out with no attempt seen to find
// the key held: either Redis did not answer within it, or the call waited
// behind other calls for the same key through the same Mutex and made no
// attempt of its own. The interceptor then checks the key with the Locker's
// Check, for at most 250ms: if Redis answers, the call gets the busy code,
// with an error that names the key; if not, it is a Redis failure. The
// budget and that check bound Redis calls only on a go-redis client with
// ContextTimeoutEnabled (clients from redisurl.Open have it); on others a
// call that gets no reply ends with the client's read timeout.
//
// A Redis failure gives Unavailable: the interceptor fails closed, because
// running the handler without the lock would break the very guarantee it
// exists for. WithFailOpen runs the handler without a lock instead. A busy
// key, or a call whose own context ended, never runs its handler without
// the lock, even with WithFailOpen.
//
// # Reentrancy
//
// A handler that locks the key its call is serialized on through the same
// Locker with [mutex.WithLock] joins the call's lease instead of waiting for
// itself, and so does a second interceptor on the same key. A direct Lock of
// that key, or WithLock through another Locker over the same Mutex, fails at
// once with [mutex.ErrReentrant].
package grpcmw
