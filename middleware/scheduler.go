package middleware

import "github.com/distlock/distlock/mutex"

// Defaults of SchedulerConfig.
const (
	DefaultWorkers   = mutex.DefaultRenewerWorkers
	DefaultBatchSize = mutex.DefaultRenewerBatchSize
	DefaultWindow    = mutex.DefaultRenewerWindow
)

// SchedulerConfig configures a Scheduler. The zero value means the
// defaults: BatchSize is the largest number of leases renewed together
// (DefaultBatchSize if zero), and Window how far apart renewals may fall
// due and still be made together, the later ones early (DefaultWindow if
// zero). Workers has no effect (see mutex.RenewerConfig).
type SchedulerConfig = mutex.RenewerConfig

// SchedulerStats counts what a Scheduler did: the leases being renewed now,
// the extensions attempted, the batches sent (the leases of Mutexes in a
// batch cost one Redis round trip per client), and the extensions that
// failed with an error other than the end of the lease and were retried.
type SchedulerStats = mutex.RenewerStats

// Scheduler renews the leases of AutoExtend. It is the renewal engine of
// package mutex, mutex.Renewer, which also extends the leases of
// mutex.RunLocked and mutex.WithLock: without WithScheduler, AutoExtend
// shares the process-wide one, mutex.DefaultRenewer, with them.
//
// One Scheduler serves any number of leases with one goroutine that keeps
// them in a heap ordered by due time: renewals due within Window of each
// other go together, in batches of up to BatchSize, and the leases of Mutexes that
// share a Redis client go to Redis in one pipeline (as with
// mutex.ExtendMany), each client's in a goroutine of its own.
//
// The goroutines run only while the Scheduler has leases to renew: they
// start with the first lease and exit once the last one is unlocked or has
// ended. So a Scheduler needs no Close, and the process-wide one is never
// closed. Close is for a Scheduler that its owner wants to stop at a given
// moment: its leases are no longer renewed, and locking through an
// AutoExtend that uses it fails with an error wrapping mutex.ErrClosed.
//
// A renewal in flight ends at the latest validity deadline of its batch,
// provided the client honours context deadlines (go-redis does with
// redis.Options.ContextTimeoutEnabled); otherwise, when Redis does not
// answer, it ends with the client's read timeout. Either way each lease
// still ends at its own deadline, and Unlock does not wait for it.
type Scheduler = mutex.Renewer

// NewScheduler returns a Scheduler of its own. Negative values in cfg give
// an error wrapping mutex.ErrInvalid.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	return mutex.NewRenewer(cfg)
}
