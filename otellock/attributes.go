package otellock

import (
	"crypto/sha256"
	"encoding/hex"

	"go.opentelemetry.io/otel/attribute"
)

// Span and metric attribute keys. See the package documentation for the
// spans and metrics that carry each one.
const (
	// AttrOperation is the Locker or Lease method: one of the Operation
	// values.
	AttrOperation = attribute.Key("distlock.lock.operation")
	// AttrOutcome is how the call ended: one of the Outcome values.
	AttrOutcome = attribute.Key("distlock.lock.outcome")
	// AttrKey holds the keys as given (string array), with KeyRaw.
	AttrKey = attribute.Key("distlock.lock.key")
	// AttrKeyHash holds, for each key, the first 16 hex digits of its
	// SHA-256 digest (string array), with KeyHashed.
	AttrKeyHash = attribute.Key("distlock.lock.key_hash")
	// AttrBlockingKey is the key found held by another owner when a Lock or
	// TryLock was not obtained (string), with KeyRaw.
	AttrBlockingKey = attribute.Key("distlock.lock.blocking_key")
	// AttrBlockingKeyHash is the hash of that key (string), with KeyHashed.
	AttrBlockingKeyHash = attribute.Key("distlock.lock.blocking_key_hash")
	// AttrKeyCount is the number of keys of the call (int).
	AttrKeyCount = attribute.Key("distlock.lock.key_count")
	// AttrFence is the fencing token of the lease (int).
	AttrFence = attribute.Key("distlock.lock.fence")
	// AttrFIFO tells whether the Mutex grants in request order (bool), as
	// set with WithFIFO.
	AttrFIFO = attribute.Key("distlock.lock.fifo")
	// AttrWaitDuration is the duration of the Lock or TryLock call in
	// seconds (double).
	AttrWaitDuration = attribute.Key("distlock.lock.wait_duration")
	// AttrHoldDuration is the time from the grant to the end of the lease
	// in seconds (double), on Unlock spans and lost-lease records.
	AttrHoldDuration = attribute.Key("distlock.lock.hold_duration")
	// AttrEnd is how a lease ended: EndUnlocked or EndLost.
	AttrEnd = attribute.Key("distlock.lock.end")
	// AttrStatus is the result of a Check: one of the Status values.
	AttrStatus = attribute.Key("distlock.lock.status")
)

// Values of AttrOperation.
const (
	OperationLock    = "lock"
	OperationTryLock = "try_lock"
)

// Values of AttrOutcome.
const (
	// OutcomeObtained: Lock or TryLock returned a lease.
	OutcomeObtained = "obtained"
	// OutcomeNotObtained: a key was held by another owner (ErrNotObtained).
	OutcomeNotObtained = "not_obtained"
	// OutcomeCancelled: the call's context was cancelled first.
	OutcomeCancelled = "cancelled"
	// OutcomeTimeout: the call's context deadline passed first, such as a
	// wait budget that ran out before the lock was obtained.
	OutcomeTimeout = "timeout"
	// OutcomeOK: Extend or Unlock succeeded.
	OutcomeOK = "ok"
	// OutcomeNotHeld: the lease no longer held its keys (ErrNotHeld).
	OutcomeNotHeld = "not_held"
	// OutcomeReleased: the lease had already been unlocked (ErrReleased).
	OutcomeReleased = "released"
	// OutcomeError: any other error, such as a Redis failure or bad input.
	OutcomeError = "error"
)

// Values of AttrEnd.
const (
	EndUnlocked = "unlocked"
	EndLost     = "lost"
)

// Values of AttrStatus.
const (
	StatusAvailable       = "available"
	StatusLocked          = "locked"
	StatusPartiallyLocked = "partially_locked"
)

// Span and event names.
const (
	spanLock      = "distlock.Lock"
	spanTryLock   = "distlock.TryLock"
	spanCheck     = "distlock.Check"
	spanExtend    = "distlock.Extend"
	spanUnlock    = "distlock.Unlock"
	spanLeaseLost = "distlock.LeaseLost"
	eventLost     = "distlock.lease.lost"
)

// Metric names.
const (
	// MetricWaitDuration is a histogram of Lock and TryLock durations in
	// seconds, with AttrOperation and AttrOutcome.
	MetricWaitDuration = "distlock.lock.wait.duration"
	// MetricHoldDuration is a histogram of the time leases were held, from
	// grant to Unlock or loss, in seconds, with AttrEnd.
	MetricHoldDuration = "distlock.lock.hold.duration"
	// MetricAcquisitions counts Lock and TryLock calls, with AttrOperation
	// and AttrOutcome.
	MetricAcquisitions = "distlock.lock.acquisitions"
	// MetricHeld is an up-down counter of the leases currently held.
	MetricHeld = "distlock.lock.held"
	// MetricLost counts leases that ended without Unlock.
	MetricLost = "distlock.lock.lost"
	// MetricExtendFailures counts failed Extend calls, with AttrOutcome.
	MetricExtendFailures = "distlock.lock.extend.failures"
)

// HashKey returns the value recorded for key under AttrKeyHash with
// KeyHashed: the first 16 hex digits of its SHA-256 digest.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

func (ins *instruments) appendKeys(attrs []attribute.KeyValue, keys []string) []attribute.KeyValue {
	switch ins.keyMode {
	case KeyRaw:
		return append(attrs, AttrKey.StringSlice(keys))
	case KeyHashed:
		hs := make([]string, len(keys))
		for i, k := range keys {
			hs[i] = HashKey(k)
		}
		return append(attrs, AttrKeyHash.StringSlice(hs))
	}
	return attrs
}

func (ins *instruments) appendBlockingKey(attrs []attribute.KeyValue, key string) []attribute.KeyValue {
	switch ins.keyMode {
	case KeyRaw:
		return append(attrs, AttrBlockingKey.String(key))
	case KeyHashed:
		return append(attrs, AttrBlockingKeyHash.String(HashKey(key)))
	}
	return attrs
}
