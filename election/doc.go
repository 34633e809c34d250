// Package election elects one leader per name among processes, on any
// mutex.Locker.
//
// A term is a lease of the name, taken with the Election's Locker (a
// *mutex.Mutex, or any Locker that excludes itself, decorated or not):
// whoever holds it leads. Campaign waits for the lease, records the
// leader, announces it, and returns the *Term, which is the lease itself
// (it implements mutex.Lease) plus the leader's value:
//
//	m, _ := mutex.New(client, mutex.Config{TTL: 5 * time.Second})
//	e, _ := election.New(m, client, election.Config{})
//	term, err := e.Campaign(ctx, "nightly-report", hostname)
//	...
//	<-term.Done() // stop acting as the leader
//
// Run wraps it all: it campaigns, runs a function while it leads, with a
// context that is cancelled when the term is lost, and campaigns again.
//
// # Terms
//
// A term's number is the fence of its lease (Term.Fence): each term of a
// name has a greater one than the terms before it, as the storage behind
// the Locker sees them, so a leader passes it to what it writes, and
// stale leaders' writes can be refused. The term is extended in the
// background by mutex.DefaultRenewer, every third of its remaining
// validity; a renewal that finds the lease taken, or runs out of time,
// ends the term: Done closes and Err wraps mutex.ErrNotHeld, before the
// lease's keys can expire in Redis. A killed leader is replaced when its
// lease runs out, within its TTL. Resign ends the term at once and
// releases the lease, so a waiting candidate wins without delay.
//
// # Leader records
//
// The winner of a term records it in "<prefix>:{<name>}:leader" (the name
// escaped as mutex keys are), as "<fence> <since> <value>", with the
// lease's expiry, renewed with the lease; a record of a later term is
// never overwritten, and Resign deletes its own. Leader reads it, without
// campaigning, and returns ErrNoLeader when there is none. The same
// script publishes the record on the channel of the same name.
//
// # Observing
//
// Observe delivers each new leader of a name, in order, once: it
// subscribes to the announcements on the Election's one pub/sub
// connection, and reads the record when the subscription is confirmed, at
// first and after each reconnect (go-redis subscribes again by itself),
// so a change announced while the connection was down is still delivered.
// Leaders are told apart by their fences: a leader is delivered only if
// its fence is greater than the last delivered, which keeps the order
// when a read and an announcement cross. Observe does not poll.
//
// # Errors
//
// Bad input (a nil Locker or client, a bad Config, an empty or oversized
// name, a value over MaxValueLen bytes or not UTF-8, a nil function) gets
// an error wrapping mutex.ErrInvalid before any Redis call. Campaign
// returns the errors of the Locker's Lock (for a context that ends, one
// matching mutex.ErrNotObtained and ctx.Err()), and mutex.ErrClosed after
// Close.
package election
