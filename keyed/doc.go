// Package keyed locks typed resources, such as a user by its ID or an order by
// its UUID, through a mutex.Locker.
//
// A Keyed[K] pairs a Locker with a namespace and a way to turn a K into a
// string:
//
//	users := keyed.New[int64](locker, "user")
//	lease, err := users.Lock(ctx, 42) // locks the core key "user:42"
//
// The locker may be a bare *mutex.Mutex or a chain of decorators around it;
// keyed sits outside all of them and only changes the keys:
//
//	keyed.New[K](outer(inner(core)), namespace)
//
// which middleware.Chain(core, outer, inner) builds.
//
// # Key encoding
//
// The key string of a K is, in order of precedence:
//
//   - the result of the function given with WithKeyFunc;
//   - for a K whose underlying type is a string, the string itself;
//   - for a K whose underlying type is a signed or unsigned integer, its
//     decimal form;
//   - for uuid.UUID, its canonical form (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx);
//   - for a K that implements fmt.Stringer, its String method.
//
// Strings and integers use their value even when K also has a String
// method, so that renaming an enum label never moves its locks. Any other K
// needs WithKeyFunc.
//
// The core key is the namespace, with '%' written as "%25" and ':' as "%3A",
// then ':', then the key string. Distinct (namespace, key string) pairs
// therefore never share a core key: namespace "a" with key "b:c" gives
// "a:b:c", namespace "a:b" with key "c" gives "a%3Ab:c". The core escapes
// the key again on its way to Redis and places it in a Redis Cluster hash
// tag, so all locks work on Cluster. Key reports the core key of a K, and
// Lease.Keys of a lease from keyed returns core keys.
//
// The key function must be injective over the values that should be
// distinct locks: two values with the same key string are the same lock.
//
// # HTTP and gRPC
//
// httpmw.KeyedPathValue and grpcmw.KeyedFromRequest make middleware key
// functions from a Keyed and a parser: a request locks the core key (Key)
// of the value it parses to, so that with accounts :=
// keyed.New[int64](locker, "account"), "/accounts/042" and "/accounts/42"
// lock the same key as accounts.Lock(ctx, 42). Give the middleware the
// Locker the Keyed was made with, so that accounts.WithLock in a handler
// joins the request's lease.
//
// # Errors
//
// New cannot return an error. A bad namespace (empty, or longer than
// MaxNamespaceLen bytes), a nil Locker, a nil key function or a K without a
// default encoding and without WithKeyFunc is recorded by New and reported
// by Err; every method then returns that error, wrapping mutex.ErrInvalid,
// before any Redis call. A key whose string is empty, or whose core key is
// longer than mutex.MaxKeyLen bytes, also fails with an error wrapping
// mutex.ErrInvalid before any Redis call. Nothing in the package panics on
// bad input.
//
// Every other error comes unchanged from the Locker: mutex.ErrNotObtained,
// mutex.ErrReentrant, mutex.ErrClosed, the context's error and Redis
// failures.
package keyed
